"""Errors in the words of the dock widget: the API's messages advise Python
(``channel_axis=...``, ``np.nan_to_num``); a person clicking buttons is told which row
to choose or which box to tick instead."""

from __future__ import annotations

import re

from ..settings import FIELDS

#: The API's advice (for Python) and what a widget user does instead, in order.
_WIDGET_WORDS = (
    (
        r"texture=True is for single 2-D images in this version; segment one plane at a time",
        "texture features work on single 2-D images: choose 'current plane' under "
        "'planes', or untick 'texture features'",
    ),
    (
        r"segment_stack supports method='kmeans' only in this version; run "
        r"method='kanezaki' plane by plane",
        "self-training works on single 2-D images: choose 'current plane' under 'planes'",
    ),
    (
        r"(?:if an axis is channels|if this is a channel axis), pass channel_axis=\.\.\.",
        "if an axis holds channels, choose it under 'channels' in the form",
    ),
    (r"pass channel_axis=\.\.\.", "choose the channel axis under 'channels' in the form"),
    (
        r"replace them\s+first, e\.g\. np\.nan_to_num(?:\([^)]*\))?",
        "napari-dsp cannot fit them: fill them (for example with 0) in a copy of the layer "
        "and run on that copy",
    ),
    (r"pass np\.abs\(image\)", "use a layer of its magnitude"),
    (r"segment one plane at a time", "choose 'current plane' under 'planes'"),
    (r"run method='kanezaki' plane by plane", "choose 'current plane' under 'planes'"),
    (r"pass one time point, e\.g\. image\[t\]", "choose 'current plane' under 'planes'"),
    (r"or pass one plane, e\.g\. image\[0\]", "or choose 'current plane' under 'planes'"),
)


def in_widget_words(message: str) -> str:
    """An error of the API (which advises Python: ``channel_axis=...``,
    ``np.nan_to_num``) in the words of the form: the row to choose, the box to tick."""
    for pattern, words in _WIDGET_WORDS:
        message = re.sub(pattern, words, message)
    for name, field in FIELDS.items():  # texture=True -> 'texture features' ticked
        label = field.label or name
        message = re.sub(rf"\b{name}=True\b", f"'{label}' ticked", message)
        message = re.sub(rf"\b{name}=False\b", f"'{label}' unticked", message)
        message = re.sub(rf"\b{name}='([^']*)'", rf"'{label}' \1", message)
    return message
