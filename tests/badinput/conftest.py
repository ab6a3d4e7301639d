"""The bad-input suite reports its count of cases and tracebacks at the end of the run."""
from tests.badinput.harness import OUTCOMES


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if not OUTCOMES:
        return
    counts = {k: sum(v == k for v in OUTCOMES.values()) for k in ("refused", "accepted",
                                                                   "traceback")}
    terminalreporter.write_line(
        f"bad-input suite: {len(OUTCOMES)} cases, {counts['refused']} refused with a message, "
        f"{counts['accepted']} accepted, {counts['traceback']} tracebacks"
    )
    for name, outcome in sorted(OUTCOMES.items()):
        if outcome == "traceback":
            terminalreporter.write_line(f"  traceback: {name}")
