"""`site_node ingest` says how much of a dataset the out-of-body detector blanked, warns, and fails above the limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from site_node.cli import main
from site_node.home import init_home
from site_node.store import DataStore


def _ingest(home: Path, source: Path, *extra: str) -> int:
    args = ["ingest", "--home", str(home), "--source", str(source), "--format", "cholec80", "--profile", "demo"]
    return main([*args, *extra])


@pytest.mark.parametrize(
    ("extra", "code", "blanked"),
    [
        # The colour heuristic blanks most synthetic frames (they are not lit like a scope): a warning, no limit set.
        ((), 0, True),
        # The same with a limit: the ingest fails and the store stays empty.
        (("--max-blank-share", "0.5"), 1, True),
        # The site declares its footage holds no room scenes: nothing blanked, no warning.
        (("--out-of-body", "none", "--max-blank-share", "0.0"), 0, False),
    ],
)
def test_blank_share_is_reported(
    synthetic_site: Path, tmp_path: Path, capsys, extra: tuple[str, ...], code: int, blanked: bool
) -> None:  # type: ignore[no-untyped-def]
    home = init_home(tmp_path / "home", "site-a")
    assert _ingest(home.root, synthetic_site / "cholec80", *extra) == code
    out, err = capsys.readouterr()
    datasets = DataStore(home.store_dir).datasets()
    if code:
        assert not datasets
        error = err[err.index("site_node: error:") :]  # after the progress bars
        assert error.startswith("site_node: error: the out-of-body detector (colour-heuristic-v1) blanked "), error
        assert "above the site's max_blank_share 0.5; nothing was added to the store" in error
        return
    assert len(datasets) == 1
    share = float(out.split(" videos ingested, ")[1].split("%")[0])
    assert (share > 10.0) is blanked, out
    warned = "`--out-of-body none`" in err and "the site's own out-of-body classifier" in err
    assert warned is blanked, err


def test_the_site_sets_the_limit(synthetic_site: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    home = init_home(tmp_path / "home", "site-a")
    home.config_file.write_text(
        home.config_file.read_text().replace("# max_blank_share = 0.5", "max_blank_share = 0.25")
    )
    assert _ingest(home.root, synthetic_site / "cholec80") == 1
    assert "above the site's max_blank_share 0.25" in capsys.readouterr().err
    assert _ingest(home.root, synthetic_site / "cholec80", "--max-blank-share", "1") == 0  # one run, raised
