"""A wheel install (not editable, not the repository) validates configs and sample sheets: the schemas
ship inside the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv

from tests import REPO

CHECK = textwrap.dedent("""
    import sys
    from pathlib import Path
    import vlmattn
    from vlmattn.workflow import load_config
    from vlmattn.datasets import read_sheet
    from vlmattn.errors import ConfigError

    assert Path(vlmattn.__file__).is_relative_to(Path(sys.prefix)), vlmattn.__file__
    cfg = load_config({"questions": {"q": {"text": "Hi?"}}, "models": {"m": {"family": "llava", "path": "x"}}})
    assert cfg["shards"] == 4, cfg["shards"]
    try:
        load_config({"questions": {"q": {"text": "Hi?"}}, "models": {"m": {"family": "gpt"}}})
    except ConfigError as e:
        print("refused:", e)
    else:
        raise AssertionError("an unknown family was accepted")
    Path("s.tsv").write_text("image\\tquestion\\na.png\\tWhat?\\n")
    print("sheet rows:", len(read_sheet("s.tsv").rows))
""")


def test_wheel_install_validates_a_config(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copytree(REPO / "vlmattn", src / "vlmattn", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    tmp_path / "dist", src], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("vlmattn-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # the wheel alone into the fresh environment; its dependencies from this one (no network)
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel],
                   check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run([python, "-c", CHECK], cwd=work, capture_output=True, text=True,
                         env={"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "refused: config models.m.family" in run.stdout
    assert "sheet rows: 1" in run.stdout
