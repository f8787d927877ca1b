"""The computation, numpy in and numpy out, torch inside; no napari, no Qt, no files.

image (layouts, normalisation, padding, resizing), plan (every device, tile, working
size, batch, thread and memory decision), nets (the generators and Kanezaki's feature
net), fit (the training loop, threads, median and spread), prior (a plane's or a
volume's prior as the plan says), cluster (window features, K-means, foreground rule),
postprocess (refinement, holes, specks, instances), kanezaki (self-training).
"""
