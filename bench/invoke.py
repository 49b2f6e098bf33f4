"""Child process of the cold-start bench: load one function's entry, invoke it once, report JSON on stdout.

Usage: python bench/invoke.py FUNCTION EVENT_JSON_FILE   (the environment points at Prefect and moto)
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOUD_SDKS = (
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "boto3",
    "botocore",
    "s3transfer",
    "google",
    "azure",
    "modal",
    "coiled",
    "prefect",
    "prefect_aws",
)


@dataclass
class Context:
    function_name: str = "pushpool-bench"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:pushpool-bench"
    aws_request_id: str = "bench-1"


def _peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would include the forking parent's peak: Linux keeps it across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(function: str, event_file: str) -> None:
    event = json.loads(Path(event_file).read_text())
    before = set(sys.modules)
    started = time.perf_counter()
    spec = importlib.util.spec_from_file_location(f"fn_{function}", ROOT / "functions" / function / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    imported = time.perf_counter()
    sdks_at_import = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(CLOUD_SDKS))
    result = module.lambda_handler(event, Context())
    invoked = time.perf_counter()
    sdks = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(CLOUD_SDKS))
    answer = result.get("body") if isinstance(result, dict) else None
    print(
        json.dumps(
            {
                "import_ms": (imported - started) * 1000,
                "first_invoke_ms": (invoked - imported) * 1000,
                "peak_rss_mb": _peak_rss_mb(),
                "sdks_at_import": sdks_at_import,
                "sdks_after_invoke": sdks,
                "answer": (answer or json.dumps(result))[:300],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
