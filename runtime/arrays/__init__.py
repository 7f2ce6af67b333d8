"""What an input is when it is not one small 2D image file, and where its masks go.

An *array input* is a multi-page TIFF / OME-TIFF / BigTIFF, a Zarr (v2, v3, OME-Zarr) array
or group, or an HDF5 dataset (``FILE.h5:/path``). Our models are 2D: an array is segmented
plane by plane (every axis but Y, X and the channel axis counts planes), and each plane is
read by windows, so memory never depends on the plane's area:

- ``source.py``: ``ArrayInfo`` (format, axes, shape, dtype, chunks, pyramid levels) and the
  ``ArraySource`` interface (``read(plane, y0, y1, x0, x1)``); ``open_array(spec)``.
- ``tiff.py``, ``zarr_source.py``, ``hdf5.py``: the readers (tifffile, zarr, h5py: the
  ``volumes`` extra, imported only when such an input is opened).
- ``writers.py``: masks written by row bands as they finish, durable band by band (resume):
  a multi-page TIFF beside the input's name (page i = plane i), or an OME-Zarr label image.

The lean ``[cpu]`` runtime imports none of these libraries.
"""
