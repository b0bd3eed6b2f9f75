"""The numerical core: NumPy arrays in, values out; never files, click, rich, h5py or zarr."""
