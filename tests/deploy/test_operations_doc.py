"""docs/operations.md stays true to the things it points at: alert runbook links, its own anchors, the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.cli.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "operations.md"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors() -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {slug(heading) for heading in headings}


def test_slug_follows_github() -> None:
    assert slug("Ledger caller tokens (LEDGER_CALLERS)") == "ledger-caller-tokens-ledger_callers"
    assert slug("Webhook SLO burn") == "webhook-slo-burn"


def linking_files() -> list[Path]:
    found = [*ROOT.joinpath("deploy").rglob("*.yml"), *ROOT.joinpath("deploy").rglob("*.json")]
    return [*found, *ROOT.joinpath("docs").glob("*.md")]


@pytest.mark.parametrize("path", linking_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_links_into_the_runbook_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    targets = set(re.findall(r"operations\.md#([\w-]+)", text))
    if path == RUNBOOK:
        targets |= set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert targets <= anchors(), f"{path.name} links to missing runbook sections: {sorted(targets - anchors())}"


def test_alert_rules_link_to_the_runbook() -> None:
    rules = (ROOT / "deploy" / "prometheus" / "credits-rules.yml").read_text(encoding="utf-8")
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert alerts
    assert rules.count("runbook: docs/operations.md#") == len(alerts), "every alert names its runbook section"
    text = RUNBOOK.read_text(encoding="utf-8")
    missing = [alert for alert in alerts if f"`{alert}`" not in text]
    assert not missing, f"alerts the runbook does not mention: {missing}"


def test_creditsctl_commands_in_the_runbook_exist() -> None:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    known = set(subparsers.choices)  # type: ignore[attr-defined]
    # Commands as written in code: `creditsctl X`, or after `run --rm` in a compose command line.
    pattern = re.compile(r"(?:`|--rm )creditsctl ([a-z][a-z-]+)")
    used = set(pattern.findall(RUNBOOK.read_text(encoding="utf-8")))
    assert len(used) >= 4, used
    assert used <= known, f"unknown creditsctl commands in the runbook: {sorted(used - known)}"
