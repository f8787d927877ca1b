"""The napari front end: the dock widget (:mod:`.widget`), its settings form generated
from the settings metadata (:mod:`.form`) and the placement of its output layers
(:mod:`.outputs`). The only package modules that import napari or Qt (with
``_sample_data``); importing this package itself imports neither: the manifest's widget
command, :class:`DockWidget`, imports them when napari asks for the widget."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from .widget import DSPWidget


class DockWidget:
    """The manifest's widget command: makes the dock widget for ``napari_viewer``.

    The widget's modules (napari, magicgui, Qt) are imported when napari asks for the
    widget, not when the manifest's commands are imported, so ``npe2 validate --imports``
    passes where the plain package is installed without napari. A class, because napari
    reads the viewer parameter from ``__init__``'s signature; ``__new__`` returns the
    :class:`~napari_dsp._qt.widget.DSPWidget` itself.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget docks into (napari passes it by this name).
    """

    def __new__(cls, napari_viewer: napari.viewer.Viewer) -> DSPWidget:
        from .widget import DSPWidget

        return DSPWidget(napari_viewer)

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:  # pragma: no cover
        """Never called: ``__new__`` returns a ``DSPWidget``; here for the signature."""
