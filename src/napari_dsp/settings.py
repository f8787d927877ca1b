"""One validated settings object shared by the API, the command line and the widget.

Every parameter of the method lives here exactly once, with its default, its bounds and
its help text. The command line builds its flags from :data:`FIELDS`, the napari widget
builds its form from it, and the compute code receives plain values unpacked from
:class:`Settings` (never the object itself).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")
METHODS = ("kmeans", "kanezaki")
#: What kind of image it is (:mod:`napari_dsp.core.modality`): "auto" assumes nothing.
MODALITIES = ("auto", "fluorescence", "phase", "brightfield-stain")
PRECISIONS = ("auto", "float32", "bfloat16")


#: What the settings govern, in the order forms and ``--help`` show them: the handful a
#: user needs up front, then the rest by what they govern.
GROUPS = {
    "main": "what to segment and how it is reported",
    "fit": "the prior's fit (the ensemble of generator fits)",
    "clustering": "turning the prior into classes",
    "self-training": "method 'kanezaki' (self-training that finds the classes)",
}


#: When a setting applies, from the values of the others (the form hides what does not
#: apply; ``stack`` is true for a stack segmented as a whole).
APPLIES: dict[str, Callable[[dict], bool]] = {
    "always": lambda v: True,
    "kmeans": lambda v: v.get("method") == "kmeans",
    "fgbg": lambda v: v.get("method") == "kmeans" and v.get("n_classes") == 2,
    # the outline refinement works from intensities; texture features skip it
    "refine": lambda v: (
        v.get("method") == "kmeans" and v.get("n_classes") == 2 and not v.get("texture")
    ),
    "kanezaki": lambda v: v.get("method") == "kanezaki",
    "superpixels": lambda v: v.get("method") == "kanezaki" and not v.get("continuity_weight"),
    "stack": lambda v: bool(v.get("stack")) and v.get("method") == "kmeans",
}


@dataclass(frozen=True)
class Field:
    """Description of one setting, read by the command line and the widget.

    ``label`` is the form's short name, ``help`` the tooltip and ``--help`` text;
    ``minimum``/``maximum``/``choices`` the accepted values (``choice_labels`` what the
    form shows for them); ``flag`` the command-line flag (for a setting that is on by
    default, the flag that turns it off: ``--no-<name>``); ``group`` what it governs
    (:data:`GROUPS`: the handful a user needs up front, then the fit, the clustering and
    the self-training, folded in the form and grouped in ``--help``); ``applies`` names a
    rule of :data:`APPLIES`; ``none_text`` is what None means for an optional setting
    ("automatic", "random").
    """

    name: str
    help: str
    flag: str
    label: str = ""
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[tuple] = None
    choice_labels: Optional[tuple] = None
    group: str = "main"
    applies: str = "always"
    none_text: Optional[str] = None
    step: Optional[float] = None

    @property
    def advanced(self) -> bool:
        """Folded in the form (everything but the main group)."""
        return self.group != "main"


#: The description of every setting, in the order forms and ``--help`` show them.
FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field(
            "method",
            "'kmeans': K-means on the prior with n_classes classes; 'kanezaki': "
            "self-training on superpixels of the prior that finds the number of classes "
            "itself (stops at min_labels).",
            label="method",
            choices=METHODS,
            choice_labels=("K-means on the prior", "self-training (finds classes)"),
            flag="--method",
        ),
        Field(
            "n_classes",
            "Number of classes. 2 = foreground/background (0 = background, "
            "1 = foreground); K > 2 = classes 1..K ordered by mean prior intensity.",
            label="classes",
            minimum=2,
            maximum=32,
            flag="--classes",
            applies="kmeans",
        ),
        Field(
            "min_labels",
            "kanezaki: stop once the number of classes has fallen to this "
            "(then train stabilize_iter more iterations).",
            label="min classes",
            minimum=1,
            maximum=99,
            flag="--min-labels",
            applies="kanezaki",
        ),
        Field(
            "modality",
            "What kind of image it is. 'auto': nothing assumed (the foreground is the "
            "class that covers less of the image border; the result says when the image "
            "looks like phase contrast or a stained section). 'fluorescence': objects "
            "brighter than the background, dim ones kept beside bright ones. 'phase': "
            "phase contrast, cells darker than the background with bright halos, dense "
            "colonies included (the prior is fitted to the local contrast too; halos and "
            "the gaps between touching cells stay background). 'brightfield-stain': a "
            "stained section in transmitted light (H&E...), RGB; the prior is fitted to "
            "the stain densities, the foreground is the haematoxylin-rich class (nuclei). "
            "Foreground/background of single 2-D images.",
            label="modality",
            choices=MODALITIES,
            choice_labels=("auto", "fluorescence", "phase contrast", "brightfield, stained"),
            flag="--modality",
            applies="fgbg",
        ),
        Field(
            "texture",
            "Fit the prior to texture channels as well as the intensities "
            "(Gabor filter energies at 4 scales x 4 orientations, their first 6 "
            "principal components) and cluster both: regions of the same brightness "
            "but different texture (tissue types, textured substrates) become "
            "different classes. Single 2-D images; the outline refinement (from "
            "intensities) is skipped, and a split is believed where the classes "
            "differ in intensity or in texture beyond the image's noise.",
            label="texture features",
            flag="--texture",
        ),
        Field(
            "invert",
            "Swap foreground and background (2 classes only).",
            label="invert foreground",
            flag="--invert",
            applies="fgbg",
        ),
        Field(
            "instances",
            "Foreground/background only: give every object its own id "
            "(touching round objects split by a distance-transform watershed, holes "
            "filled, specks removed) and report the count.",
            label="one id per object (count)",
            flag="--instances",
            applies="fgbg",
        ),
        Field(
            "min_size",
            "Foreground/background: pieces of foreground smaller than "
            "this many pixels are removed (specks; with instances, objects); 0 keeps "
            "everything.",
            label="smallest object (px)",
            minimum=0,
            maximum=10**9,
            flag="--min-size",
            applies="fgbg",
        ),
        Field(
            "volumetric",
            "Z-stacks: fit ONE 3-D prior to the whole stack (3-D "
            "convolutions, anisotropy from the voxel spacing) instead of one 2-D prior "
            "per plane.",
            label="one 3-D prior (volume)",
            flag="--volumetric",
            applies="stack",
        ),
        Field(
            "seed",
            "Random seed. None draws one; the seed used is reported with the "
            "result so any run can be repeated.",
            label="seed",
            minimum=0,
            maximum=2**32 - 1,
            flag="--seed",
            none_text="random",
        ),
        Field(
            "device",
            "Where to fit: 'auto' (CUDA, then Apple MPS, then CPU), 'cpu', "
            "'cuda', 'cuda:N' (the N-th GPU) or 'mps'.",
            label="device",
            flag="--device",
        ),
        Field(
            "n_iter",
            "Iterations of each generator fit. Few (tens) is the point: the "
            "prior is the early, de-textured fit.",
            label="iterations",
            minimum=1,
            maximum=5000,
            group="fit",
            flag="--iterations",
        ),
        Field(
            "warm_iter",
            "Stacks and time-lapses: iterations of a plane that starts from the "
            "fit of the plane before it (its neighbour in Z or T) instead of from "
            "scratch; the first plane, and one in every 32, gets the full iterations. "
            "0 = every plane from scratch (a plane's result then does not depend on "
            "the planes before it).",
            label="warm-start iterations",
            minimum=0,
            maximum=5000,
            group="fit",
            flag="--warm-iterations",
        ),
        Field(
            "n_members",
            "Independent fits in the ensemble; the prior is their per-pixel median.",
            label="members",
            minimum=1,
            maximum=64,
            group="fit",
            flag="--members",
        ),
        Field(
            "settle",
            "Stop the fits early once the prior has settled: when the "
            "median's mean change per iteration (a fraction of the intensity range) "
            "falls below this, from iteration 10 on; n_iter is then the most. 0 = "
            "always n_iter iterations (the research procedure).",
            label="settled below",
            minimum=0.0,
            maximum=1.0,
            group="fit",
            flag="--settle",
            step=0.0005,
        ),
        Field(
            "working_size",
            "Fit the prior on a plane scaled down to at most "
            "working_size x working_size pixels (aspect ratio kept) and scale it back "
            "up; clustering and outlines stay at full resolution. None = automatic: "
            "planes up to one tile (512 px on a CPU, 2048 on CUDA) at full resolution; "
            "larger ones scaled down as far as their objects allow (radius kept >= 3 "
            "px), never below one tile. 0 = full resolution. Planes larger than a tile "
            "are fitted in overlapping tiles, blended.",
            label="working size",
            minimum=0,
            maximum=65536,
            group="fit",
            flag="--working-size",
            none_text="automatic",
        ),
        Field(
            "precision",
            "Arithmetic of the fit. 'auto': bfloat16 where the processor "
            "computes it natively (CUDA GPUs with bfloat16, CPUs with AVX512-BF16 or "
            "AMX), float32 elsewhere; 'bfloat16' elsewhere is emulated and slower.",
            label="precision",
            choices=PRECISIONS,
            group="fit",
            flag="--precision",
        ),
        Field(
            "n_threads",
            "CPU threads sharing the ensemble, each running torch "
            "single-threaded. None = one per core for planes from 96x96 up, else one; "
            "0 = one fit on torch's own thread pool (slow when other programs are busy).",
            label="CPU threads",
            minimum=0,
            maximum=64,
            group="fit",
            flag="--threads",
            none_text="automatic",
        ),
        Field(
            "learning_rate",
            "Adam learning rate of the generator fits.",
            label="learning rate",
            minimum=1e-5,
            maximum=1.0,
            group="fit",
            flag="--learning-rate",
            step=0.001,
        ),
        Field(
            "preview_every",
            "Hand out the running prior every this many iterations (for live display); 0 = never.",
            label="preview every",
            minimum=0,
            maximum=5000,
            group="fit",
            flag="--preview-every",
        ),
        Field(
            "refine",
            "Foreground/background only: re-draw the prior's outlines from the "
            "image's pixels (a two-Gaussian minimum-error rule whose classes come from "
            "the prior), but only where the pixels separate the two classes (expected "
            "pixel error below 10 %); on textured or noisy images the prior's result is "
            "kept.",
            label="sharpen outlines from the pixels",
            group="clustering",
            flag="--no-refine",
            applies="refine",
        ),
        Field(
            "window",
            "Side of the square window (pixels, odd) whose prior values form "
            "each pixel's feature for K-means.",
            label="window",
            minimum=1,
            maximum=31,
            group="clustering",
            flag="--window",
            applies="kmeans",
            step=2,
        ),
        Field(
            "fill_holes",
            "Foreground/background only: background pockets enclosed by "
            "foreground become foreground.",
            label="fill holes",
            group="clustering",
            flag="--no-fill-holes",
            applies="fgbg",
        ),
        Field(
            "max_iter",
            "kanezaki: most self-training iterations.",
            label="most iterations",
            minimum=1,
            maximum=100000,
            group="self-training",
            flag="--max-iter",
            applies="kanezaki",
        ),
        Field(
            "prior_superpixels",
            "kanezaki: superpixels on the prior (True) or on the raw image "
            "(False, no prior fit: to see what the prior brings).",
            label="superpixels on the prior",
            group="self-training",
            flag="--no-prior-superpixels",
            applies="kanezaki",
        ),
        Field(
            "continuity_weight",
            "kanezaki: >0 selects the TIP 2020 variant: a spatial "
            "continuity loss of this weight instead of superpixels.",
            label="continuity weight",
            minimum=0.0,
            maximum=1000.0,
            group="self-training",
            flag="--continuity-weight",
            applies="kanezaki",
            step=0.1,
        ),
        Field(
            "stabilize_iter",
            "kanezaki: iterations after min_labels is reached.",
            label="stabilize iterations",
            minimum=0,
            maximum=10000,
            group="self-training",
            flag="--stabilize-iter",
            applies="kanezaki",
        ),
        Field(
            "n_superpixels",
            "kanezaki: SLIC superpixels on the prior.",
            label="superpixels",
            minimum=2,
            maximum=10**6,
            group="self-training",
            flag="--superpixels",
            applies="superpixels",
        ),
        Field(
            "compactness",
            "kanezaki: SLIC compactness.",
            label="compactness",
            minimum=0.001,
            maximum=10000.0,
            group="self-training",
            flag="--compactness",
            applies="superpixels",
            step=1.0,
        ),
        Field(
            "similarity_weight",
            "kanezaki: weight of the feature-similarity loss.",
            label="similarity weight",
            minimum=0.0,
            maximum=1000.0,
            group="self-training",
            flag="--similarity-weight",
            applies="kanezaki",
            step=0.1,
        ),
        Field(
            "scribble_weight",
            "kanezaki: weight of the scribble loss.",
            label="scribble weight",
            minimum=0.0,
            maximum=1000.0,
            group="self-training",
            flag="--scribble-weight",
            applies="kanezaki",
            step=0.1,
        ),
        Field(
            "kanezaki_lr",
            "kanezaki: SGD learning rate (momentum 0.9).",
            label="self-training learning rate",
            minimum=1e-5,
            maximum=10.0,
            group="self-training",
            flag="--kanezaki-lr",
            applies="kanezaki",
            step=0.01,
        ),
        Field(
            "n_features",
            "kanezaki: response channels of the feature network (the most classes it can find).",
            label="feature channels",
            minimum=2,
            maximum=1000,
            group="self-training",
            flag="--features",
            applies="kanezaki",
        ),
        Field(
            "n_conv",
            "kanezaki: 3x3 convolution layers of the feature network.",
            label="convolution layers",
            minimum=1,
            maximum=10,
            group="self-training",
            flag="--n-conv",
            applies="kanezaki",
        ),
    )
}


#: The research procedure's fit (docs/algorithm.md): ``Settings.research()``, the
#: command line's ``--research-defaults``.
RESEARCH_FIT = {"n_members": 11, "n_iter": 50, "settle": 0.0, "precision": "float32"}


@dataclass(frozen=True)
class Settings:
    """Parameters of a Deep Segmentation Prior run, validated when made.

    The defaults are the research procedure's but for two departures (6 ensemble members
    instead of 11, a 3x3 K-means window instead of 7x7); :meth:`Settings.research` gives
    the research procedure's fit. The Parameters section below is generated from
    :data:`FIELDS`, the table the command line's flags and the widget's form are built
    from, so the three say the same.
    """

    n_classes: int = 2
    modality: str = "auto"
    texture: bool = False
    invert: bool = False
    instances: bool = False
    min_size: int = 16
    refine: bool = True
    fill_holes: bool = True
    volumetric: bool = False
    method: str = "kmeans"
    min_labels: int = 3
    max_iter: int = 1000
    prior_superpixels: bool = True
    continuity_weight: float = 0.0
    n_iter: int = 50
    warm_iter: int = 15
    n_members: int = 6
    settle: float = 0.0
    window: int = 3
    working_size: Optional[int] = None
    seed: Optional[int] = None
    device: str = "auto"
    precision: str = "float32"
    n_threads: Optional[int] = None
    learning_rate: float = 0.01
    preview_every: int = 2
    stabilize_iter: int = 50
    n_superpixels: int = 10000
    compactness: float = 100.0
    similarity_weight: float = 1.0
    scribble_weight: float = 0.5
    kanezaki_lr: float = 0.1
    n_features: int = 100
    n_conv: int = 2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f.name, getattr(self, f.name))
        if self.window % 2 == 0:
            raise ValueError(
                f"window must be odd (got {self.window}); use "
                f"{self.window - 1} or {self.window + 1}"
            )
        if self.min_labels >= self.n_features:
            raise ValueError(
                f"min_labels ({self.min_labels}) must be below n_features ({self.n_features})"
            )
        if self.instances and (self.n_classes != 2 or self.method != "kmeans"):
            raise ValueError(
                "instances=True needs foreground/background segmentation "
                "(n_classes=2, method='kmeans')"
            )
        if self.modality != "auto":
            clash = (
                "method='kanezaki'"
                if self.method != "kmeans"
                else f"n_classes={self.n_classes}"
                if self.n_classes != 2
                else "texture=True"
                if self.texture
                else "volumetric=True"
                if self.volumetric
                else None
            )
            if clash:
                raise ValueError(
                    f"modality={self.modality!r} is for foreground/background of 2-D "
                    f"images (method='kmeans', n_classes=2, without texture or volumetric); "
                    f"got {clash}. Use modality='auto' with it, or drop {clash}"
                )
        if self.invert and self.n_classes != 2:
            raise ValueError(
                "invert only applies to foreground/background "
                f"(n_classes=2), got n_classes={self.n_classes}"
            )

    @classmethod
    def research(cls, **overrides: Any) -> Settings:
        """The research procedure's fit with this package's other defaults.

        Parameters
        ----------
        **overrides
            Settings that replace single values (any name of :class:`Settings`).

        Returns
        -------
        Settings
            11 members x 50 iterations, float32, no early stop (:data:`RESEARCH_FIT`),
            then ``overrides``.

        Examples
        --------
        >>> from napari_dsp import Settings
        >>> Settings.research(seed=0).n_members
        11
        """
        return cls(**{**RESEARCH_FIT, **overrides})

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed.

        Parameters
        ----------
        **changes
            New values by setting name; validated as in :class:`Settings`.

        Returns
        -------
        Settings
            The new settings; ``self`` is unchanged (settings are frozen).

        Raises
        ------
        TypeError
            For a name that is not a setting, or a value of the wrong type.
        ValueError
            For a value outside the setting's bounds.

        Examples
        --------
        >>> from napari_dsp import Settings
        >>> Settings().replace(n_classes=3).n_classes
        3
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(
                f"unknown setting(s) {sorted(unknown)}; valid settings are "
                f"{[f.name for f in dataclasses.fields(self)]}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every setting by name, as written into results' metadata.

        Returns
        -------
        dict
            ``{name: value}`` for every setting.
        """
        return dataclasses.asdict(self)

    def fit_values(self) -> dict:
        """The plain values a plane's prior fit takes.

        Returns
        -------
        dict
            The seed and the settings of the ``fit`` group by name, as
            ``napari_dsp.core.prior.iter_planned_prior`` takes them.
        """
        return {name: getattr(self, name) for name in ("seed", *FIT_GROUP) if name not in STACK_FIT}


def _types() -> dict:
    """Each setting's type, from the dataclass's annotations resolved to real types (the
    module's ``from __future__ import annotations`` keeps them as text): ``(kind,
    optional)`` with ``kind`` one of bool, int, float, str."""
    import types
    import typing

    out = {}
    for name, hint in typing.get_type_hints(Settings).items():
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        kind = next(a for a in args if a is not type(None)) if optional else hint
        out[name] = (kind, optional)
    return out


def _type_text(name: str) -> str:
    """A setting's type as numpydoc writes it: ``int``, ``int or None``, ``{'a', 'b'}``."""
    spec = FIELDS[name]
    if spec.choices is not None:
        return "{" + ", ".join(repr(c) for c in spec.choices) + "}"
    if name == "device":
        return "{'auto', 'cpu', 'cuda', 'cuda:N', 'mps'}"
    kind, optional = _types()[name]
    return kind.__name__ + (" or None" if optional else "")


def parameters_section() -> str:
    """The numpydoc Parameters section of :class:`Settings`, generated from :data:`FIELDS`
    (type, default, help): one text for the docstring, the command line and the form.

    Returns
    -------
    str
        The section, indented by four spaces as in a class docstring.
    """
    import textwrap

    lines = ["Parameters", "----------"]
    for f in dataclasses.fields(Settings):
        spec = FIELDS[f.name]
        default = "None" if f.default is None else repr(f.default)
        lines.append(f"{f.name} : {_type_text(f.name)}, default {default}")
        extra = f" ({spec.none_text} if None.)" if spec.none_text else ""
        lines += textwrap.wrap(
            spec.help + extra, 84, initial_indent="    ", subsequent_indent="    "
        )
    lines += [
        "",
        "Raises",
        "------",
        "TypeError",
        "    If a value has the wrong type.",
        "ValueError",
        "    If a value lies outside its bounds; the message names the setting and the",
        "    accepted range.",
        "",
        "Examples",
        "--------",
        ">>> from napari_dsp import Settings",
        ">>> Settings(n_members=4, seed=0).n_members",
        "4",
    ]
    return textwrap.indent("\n".join(lines), "    ") + "\n"


Settings.__doc__ = Settings.__doc__.rstrip() + "\n\n" + parameters_section()


def _check(name: str, value: Any) -> None:
    global _TYPES
    if _TYPES is None:
        _TYPES = _types()
    kind, optional = _TYPES[name]
    spec = FIELDS[name]
    if optional and value is None:
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
        return
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {value!r}")
        if name == "device" and not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' (N = 0, 1, "
                f"...) or 'mps'; got {value!r}"
            )
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, spec.choices))}; got {value!r}"
        )
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"{name} must be at least {spec.minimum:g}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        top = int(spec.maximum) if float(spec.maximum).is_integer() else spec.maximum
        raise ValueError(f"{name} must be at most {top}, got {value!r}")


#: name -> (type, optional), resolved at the first check (see :func:`_types`)
_TYPES: Optional[dict] = None

#: Names of earlier versions, still accepted by :func:`make_settings` with a warning.
RENAMED = {"n_runs": "n_members", "n_workers": "n_threads", "use_prior": "prior_superpixels"}


def renamed(overrides: dict, stacklevel: int = 3) -> dict:
    """``overrides`` with the names of earlier versions (:data:`RENAMED`) replaced by
    today's, each with a ``FutureWarning`` (``stacklevel`` points it at the user's
    line); a TypeError when a setting is given under both names. The one home of that
    rule, for :func:`make_settings` and ``Settings(...)`` alike."""
    overrides = dict(overrides)
    for old, new in RENAMED.items():
        if old in overrides and new in overrides:
            raise TypeError(f"{old!r} is the old name of {new!r}; pass {new!r} only")
        if old in overrides:
            import warnings

            warnings.warn(
                f"napari-dsp: the setting {old!r} is now called {new!r}; {old!r} will stop "
                f"working in a later version",
                FutureWarning,
                stacklevel=stacklevel,
            )
            overrides[new] = overrides.pop(old)
    return overrides


def _accepting_old_names(init: Callable) -> Callable:
    """The dataclass's ``__init__``, taking the names of earlier versions as
    :func:`make_settings` does (a FutureWarning naming the new one)."""
    import functools

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if any(old in kwargs for old in RENAMED):
            kwargs = renamed(kwargs, stacklevel=3)
        init(self, *args, **kwargs)

    return __init__


Settings.__init__ = _accepting_old_names(Settings.__init__)


def make_settings(settings: Optional[Settings] = None, **overrides: Any) -> Settings:
    """Combine an optional :class:`Settings` with keyword overrides. ``None`` for a
    setting that cannot be None (``n_iter=None``) is ignored, so a caller may pass
    "not given" through; for the optional ones (``seed``, ``working_size``,
    ``n_threads``) None is a value ("random", "automatic"). The names of earlier
    versions (:data:`RENAMED`) are accepted with a ``FutureWarning``."""
    if settings is None:
        settings = Settings()
    elif not isinstance(settings, Settings):
        raise TypeError(f"settings must be a napari_dsp.Settings, got {type(settings).__name__}")
    overrides = renamed(overrides, stacklevel=4)
    if overrides:
        global _TYPES
        if _TYPES is None:
            _TYPES = _types()
        overrides = {
            k: v for k, v in overrides.items() if v is not None or k not in _TYPES or _TYPES[k][1]
        }
        settings = settings.replace(**overrides)
    return settings


def without_unwatched_previews(settings: Settings, progress) -> Settings:
    """``settings`` for a call whose reports nobody watches (no ``progress`` callback):
    no previews are computed then."""
    return settings if progress is not None else settings.replace(preview_every=0)


#: The settings of the ``fit`` group (how a prior's ensemble is fitted).
FIT_GROUP = tuple(name for name, f in FIELDS.items() if f.group == "fit")
#: Fit settings of a stack's planes taken together, not of one plane's fit.
STACK_FIT = ("warm_iter",)
#: The settings that made a prior: a prior re-clustered keeps its own (its metadata).
PRIOR_SETTINGS = (*FIT_GROUP, "device", "texture")
#: The settings a prior can be re-clustered with, without a refit.
CLUSTERING_SETTINGS = (
    "n_classes",
    "invert",
    "instances",
    "min_size",
    *(name for name, f in FIELDS.items() if f.group == "clustering"),
)
