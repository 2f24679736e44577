"""What runs on cluster nodes: the commands that start a Dask scheduler and Dask workers there.

Nothing here imports dask or distributed at import time: these modules build argument vectors and are shared by the
local provider (which runs them as local processes) and by cloud bootstrap scripts (which run them on instances).
"""
