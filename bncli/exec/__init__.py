"""The engines: streaming passes over sources, on local threads or a dask cluster."""
