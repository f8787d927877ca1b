"""The foreground of a foreground/background run, and when there is none: the prior's
0/1 split tested against the image's noise (:mod:`napari_dsp.core.decide`), then
cleaned up (:func:`~napari_dsp.core.postprocess.post_process`) where it is believed,
else the pixels that stand out alone or nothing, with a
:class:`~napari_dsp.results.NothingToSegmentWarning` for the callers that return
plain results. Shared by the 2-D API and the stacks; nothing here knows about napari.
"""

from __future__ import annotations

import warnings
from typing import Optional

from .core import decide as _decide
from .core import postprocess as _post
from .results import NothingToSegmentWarning, SegmentResult
from .settings import Settings


def foreground_or_nothing(
    labels: list,
    raws: Optional[list],
    images: list,
    settings: Settings,
    untested: str = "no image given: not tested",
    texture: Optional[float] = None,
) -> tuple[list, dict]:
    """The prior's 0/1 maps (one per plane) tested against the image's noise
    (:mod:`napari_dsp.core.decide`; with ``texture``, the classes' texture separation
    of :func:`napari_dsp.core.texture.separation`, believed from its
    ``MIN_SEPARATION``, counts as well): where the split is believed, the clean-up of
    :func:`~napari_dsp.core.postprocess.post_process`; else the pixels that stand out
    alone, or nothing (``decision.message`` says so; :func:`warn_if_nothing` turns it
    into a :class:`NothingToSegmentWarning` for the non-generator functions)."""
    if raws is None:  # no image, or texture features: no intensity noise test
        fgs, decision = None, {"result": "prior", "separated": None, "note": untested}
    else:
        fgs, decision = _decide.decide(raws, [lab == 1 for lab in labels])
    if texture is not None:  # texture features: a texture difference counts as well
        from .core.texture import MIN_SEPARATION

        decision.update(texture_separation=round(texture, 3), texture_threshold=MIN_SEPARATION)
        if decision["result"] != "prior" and texture >= MIN_SEPARATION:
            decision.pop("message", None)
            decision.update(result="prior", note="the classes differ in texture")
        elif "message" in decision:
            decision["message"] += (
                f" (texture features: in texture the classes differ "
                f"by {texture:.1f} within-class standard deviations, "
                f"{MIN_SEPARATION:g} needed)"
            )
    if decision["result"] == "prior":
        labels, info = _post.post_process(
            labels,
            images,
            refine=settings.refine,
            fill=settings.fill_holes,
            min_size=settings.min_size,
            invert=settings.invert,
        )
        return labels, dict(info, decision=decision)
    # isolated significant pixels are kept whatever min_size says; invert does not turn
    # "nothing" into "everything"
    return [f.astype(lab.dtype) for f, lab in zip(fgs, labels)], {
        "decision": decision,
        "refined": False,
        "inverted": False,
    }


def warn_if_nothing(result: SegmentResult) -> SegmentResult:
    """Raise the :class:`NothingToSegmentWarning` of a result whose foreground was not
    the prior's (nothing stood out from the noise, or only isolated pixels). The
    generator forms leave it in the metadata (``clustering.decision``) for their caller
    to show, as the napari widget does with a notification."""
    decision = (result.metadata.get("clustering") or {}).get("decision") or {}
    if decision.get("message"):
        warnings.warn(f"napari-dsp: {decision['message']}", NothingToSegmentWarning, stacklevel=3)
    return result


def object_min_size(info: dict, settings: Settings) -> int:
    """``min_size`` for the instance ids: 1 where the foreground is the isolated pixels
    that stand out from the noise (each is significant by itself)."""
    outliers = (info.get("decision") or {}).get("result") == "outliers"
    return 1 if outliers else settings.min_size
