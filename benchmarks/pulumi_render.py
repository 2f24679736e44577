"""Rendering the aws and gcp stacks under Pulumi's mocks vs importing pulumi_aws / pulumi_gcp alone.

    python -m benchmarks.pulumi_render [--rounds 3]

Each measurement runs in a fresh Python process, in the same run: ``import pulumi_<cloud>`` alone; the same plus
loading the SDK submodules the rendering uses (pulumi_aws loads ``aws.ec2`` etc. lazily, on first attribute access:
the floor any Pulumi program creating those resources pays); and the whole rendering of ``stacks/<cloud>.py`` with
its ``Pulumi.<cloud>-dev.yaml`` config under ``pulumi.runtime.set_mocks`` (imports included). Medians over the
rounds; the ratios say what rh_iac's rendering costs on top of the provider SDK.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLOUDS = ("aws", "gcp")
#: the SDK submodules each rendering creates resources from
SUBMODULES = {"aws": ("ec2", "s3", "iam", "secretsmanager"),
              "gcp": ("compute", "storage", "secretmanager", "serviceaccount")}


def _child_import(cloud: str) -> dict[str, float]:
    start = time.perf_counter()
    sdk = __import__(f"pulumi_{cloud}")
    imported = time.perf_counter()
    for name in SUBMODULES[cloud]:
        hasattr(getattr(sdk, name), "__rh_iac_probe__")  # a lazy submodule loads on first attribute access
    return {"import": imported - start, "modules": time.perf_counter() - start}


def _child_render(cloud: str) -> dict[str, float]:
    start = time.perf_counter()
    import importlib

    import pulumi
    import yaml

    from rh_iac.project import Project

    module = importlib.import_module(f"rh_iac.providers.{cloud}.pulumi")
    imported = time.perf_counter()

    class Mocks(pulumi.runtime.Mocks):
        """Echo inputs, plus the attributes the rendering reads back (names, ARNs, addresses)."""

        def new_resource(self, args):
            state = {**args.inputs, "arn": f"arn:mock:{args.name}", "bucket": f"{args.name}-bench",
                     "name": args.inputs.get("name", f"{args.name}-bench"), "email": f"{args.name}@bench",
                     "private_ip": "10.0.0.10", "public_ip": "198.51.100.10"}
            if "networkInterfaces" in args.inputs:
                state["networkInterfaces"] = [{**args.inputs["networkInterfaces"][0], "networkIp": "10.0.0.10",
                                               "accessConfigs": [{"natIp": "198.51.100.10"}]}]
            return f"{args.name}-id", state

        def call(self, args):
            return {"id": "mock-id", "ids": ["subnet-mock"]}

    config = yaml.safe_load((REPO / f"Pulumi.{cloud}-dev.yaml").read_text())["config"]
    pulumi.runtime.set_mocks(Mocks(), project="rh_iac", stack=f"{cloud}-dev", preview=False)
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()})
    stack = Project(REPO).load_stack(config["rh_iac:stack"])

    @pulumi.runtime.test
    def program():
        return pulumi.Output.from_input(module.render(stack, Path(os.environ["RH_IAC_BENCH_STATE"])))

    program()
    done = time.perf_counter()
    return {"import": imported - start, "total": done - start}


def _measure(kind: str, cloud: str, state_dir: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RH_IAC_BENCH_STATE": str(state_dir),
           "RH_IAC_HOME": str(state_dir / "home"), "RH_IAC_DEMO_TOKEN": "bench-token"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.pulumi_render", "--child", kind, cloud], cwd=REPO,
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "CLOUD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, cloud = args.child
        print(json.dumps((_child_import if kind == "import" else _child_render)(cloud)))
        return
    with tempfile.TemporaryDirectory(prefix="rh-bench-pulumi-") as tmp:
        print(f"{'cloud':6} {'import SDK':>11} {'+submodules':>12} {'render total':>13} {'total/import':>13} "
              f"{'total/+submodules':>18}")
        for cloud in CLOUDS:
            imports, modules, totals = [], [], []
            for _ in range(args.rounds):
                sdk = _measure("import", cloud, Path(tmp) / cloud)
                imports.append(sdk["import"])
                modules.append(sdk["modules"])
                totals.append(_measure("render", cloud, Path(tmp) / cloud)["total"])
            imp, mods, total = (statistics.median(v) for v in (imports, modules, totals))
            print(f"{cloud:6} {imp:10.3f}s {mods:11.3f}s {total:12.3f}s {total / imp:12.2f}x {total / mods:17.2f}x")


if __name__ == "__main__":
    main()
