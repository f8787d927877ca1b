"""The napari front end: the dock widget (:mod:`.widget`), its settings form generated
from the settings metadata (:mod:`.form`) and the placement of its output layers
(:mod:`.outputs`). The only package modules that import napari or Qt (with
``_sample_data``)."""
