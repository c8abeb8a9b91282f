"""`videobert doctor`: what this machine offers (the core: :func:`videobert_cli.system.doctor_report`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from videobert_cli.cli.common import handle_errors

HELP = """Show devices, CPU instruction sets, decoders, runtimes, weights caches and the precision
`auto` will use. Nothing is downloaded.

Examples:

  videobert doctor

  videobert doctor --json
"""


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _package(status: dict) -> str:
    if status["importable"]:
        return f"yes ({status['version']})" if status.get("version") else "yes"
    if status.get("error"):
        return f"broken ({status['error']})"
    return "no"


def render_text(report: dict) -> str:
    """The report as aligned ``key: value`` lines."""
    cpu = report["cpu"]
    lines = [f"videobert-cli {report['videobert_cli']}, python {report['python']}, torch {report['torch']}",
             "", "CPU"]
    rows = [
        ("model", cpu["model"]),
        ("cores available", f"{cpu['cores_available']} of {cpu['cores_total']} (torch threads {report.get('torch_threads', '?')})"),
        ("instruction sets", ", ".join(f"{name} {_yes(present)}" for name, present in cpu["instruction_sets"].items())),
        ("torch capability", cpu["torch_capability"]),
        ("native bf16", _yes(cpu["native_bf16"]) + ("" if cpu["native_bf16"] else " (--precision bf16 is refused: emulated, slower than fp32)")),
        ("precisions", ", ".join(cpu["precisions_allowed"]) + f" (auto: {cpu['precision_auto']})"),
    ]
    lines += [f"  {key:<17} {value}" for key, value in rows]
    lines.append("GPU")
    if not report["gpus"]:
        lines.append("  none")
    for gpu in report["gpus"]:
        if "error" in gpu:
            lines.append(f"  {gpu['device']:<17} error: {gpu['error']}")
        else:
            lines.append(f"  {gpu['device']:<17} {gpu['name']}, compute capability {gpu['compute_capability']}, "
                         f"{gpu['memory_gb']} GB")
    lines.append(f"auto             device {report['device_auto']}, precision {report['precision_auto']}, "
                 f"CPU model runtime {report['model_runtime_auto']}")
    lines.append("decoders")
    lines += [f"  {name:<17} {_package(status)}" for name, status in report["decoders"].items()]
    lines.append("runtimes")
    lines += [f"  {name:<17} {_package(status)}" for name, status in report["runtimes"].items()]
    weights = report["weights"]
    lines.append("weights caches")
    hub = weights["torch_hub"]
    items = ", ".join(f"{c['name']} ({c['mb']:.0f} MB)" for c in hub["checkpoints"]) or "nothing cached"
    lines.append(f"  {'torch hub':<17} {hub['path']}: {items}")
    hf = weights["huggingface_hub"]
    items = ", ".join(f"{m['name']} ({m['mb']:.0f} MB)" for m in hf["models"]) or "nothing cached"
    lines.append(f"  {'hugging face':<17} {hf['path']}: {items}")
    for name, path in (weights.get("bundled") or {}).items():
        lines.append(f"  {name:<17} {'bundled: ' + path if path else 'not installed'}")
    exports = weights["onnx_exports"]
    items = ", ".join(f"{c['model']} {c['weights']} ({c['mb']:.0f} MB)" if c["usable"] else f"{c['card']} (stale)"
                      for c in exports["cards"]) or "nothing cached"
    lines.append(f"  {'onnx exports':<17} {exports['path']}: {items}")
    lines.append(f"offline          {_yes(report['offline'])}")
    return "\n".join(lines)


@handle_errors
def doctor_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    from videobert_cli.system import doctor_report

    report = doctor_report()
    typer.echo(json.dumps(report, indent=2) if json_output else render_text(report))
