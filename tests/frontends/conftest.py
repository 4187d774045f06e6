"""The ONNX node-test summary, printed at the end of the pytest run."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    mod = sys.modules.get("tests.frontends.test_onnx_node_conformance") or sys.modules.get("test_onnx_node_conformance")
    if mod is None:
        return
    s = mod.SUMMARY
    if not s["ran"] and not s["skipped"]:
        return
    tr = terminalreporter
    tr.section("ONNX backend node tests")
    tr.write_line(
        f"{s['ran']} cases ran and matched, {len(s['skipped'])} skipped, "
        f"{s['out_of_scope']} out of scope (an op pcc does not import)"
    )
    by_reason: dict[str, list[str]] = {}
    for name, reason in sorted(s["skipped"].items()):
        by_reason.setdefault(reason.split(": ", 1)[0], []).append(name)
    for reason, names in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        tr.write_line(f"  skipped {len(names)} ({reason}): {', '.join(names)}")
    for name, (rtol, atol, why) in mod.LOOSE.items():
        tr.write_line(f"  looser tolerance for {name}: rtol={rtol}, atol={atol} ({why})")
