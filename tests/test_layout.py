"""What the layout promises: training does not depend on evaluation, and every setting says what it does."""
import ast
import dataclasses
import inspect
import subprocess
import sys

from dicefer import config


def test_training_does_not_import_evaluation_or_inference():
    code = ("import sys, dicefer.training.train; "
            "print(sorted(m for m in sys.modules if m.startswith(('dicefer.evaluation', 'dicefer.inference'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_every_config_setting_has_a_one_line_comment():
    source = inspect.getsource(config)
    lines = source.splitlines()
    sections = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name.endswith("Config")]
    settings = 0
    for section in sections:
        for node in section.body:
            if isinstance(node, ast.AnnAssign) and not dataclasses.is_dataclass(getattr(config, section.name)().__dict__.get(node.target.id)):
                settings += 1
                assert "#" in lines[node.lineno - 1], f"{section.name}.{node.target.id} has no comment"
    assert 0 < settings <= 52  # 50 after the 2026-12-03 pruning, + model.backbone and identity_reference
