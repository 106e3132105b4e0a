"""Flags, config files and weight files are untrusted input: a bad flag or config value ends in
one line on stderr and exit 2, never "internal error" or a run folder left behind; a crash while
the weights are replaced leaves a run that loads.  Crafted and damaged run folders are in
e2e/test_untrusted_runs_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import SAMPLE_TV as SAMPLE
from helpers import cli, one_line_error


# ------------------------------------------------------------------ flags


BAD_FLAGS = [
    (["--seed", "-1"], "--seed"),
    (["--seed", "100000000000000000000"], "--seed"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--epochs", "1000000000000"], "--epochs"),
    (["--d-model", "100000"], "--d-model"),
    (["--d-model", "4096", "--heads", "4"], "parameters"),
    (["--h-cycles", "10000000"], "--h-cycles"),
    (["--halt-max-steps", "1000000"], "--halt-max-steps"),
    (["--seq-len", "100000"], "--seq-len"),
    (["--halt-max-steps", "32", "--h-cycles", "16", "--l-cycles", "16"], "block passes"),
]


@pytest.mark.parametrize("flags,needle", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_and_leaves_no_run_folder(fresh_home, tmp_path, flags, needle):
    out = tmp_path / "runs"
    res = cli(["train", SAMPLE, *flags, "--out", out], fresh_home)
    one_line_error(res, needle)
    assert not out.exists() or not any(out.iterdir())


def test_unparseable_numbers_are_usage_errors(fresh_home, tmp_path):
    for flags in (["--seed", "1e20"], ["--epochs", "1e12"]):
        res = cli(["train", SAMPLE, *flags, "--out", tmp_path / "runs"], fresh_home)
        assert res.exit_code == 2 and "internal error" not in res.output and flags[0] in res.output
    assert not (tmp_path / "runs").exists()


def test_config_file_values_are_type_checked(fresh_home, tmp_path):
    toml = tmp_path / "c.toml"
    for body, needle in (('[model]\nd_model = "wide"\n', "--d-model"), ("[train]\nlr = nan\n", "--lr"),
                         ("[train]\nepochs = 1.5\n", "--epochs")):
        toml.write_text(body)
        res = cli(["train", SAMPLE, "--config", toml, "--out", tmp_path / "runs"], fresh_home)
        one_line_error(res, needle)
    assert not (tmp_path / "runs").exists()


def _small_run(tmp_path):
    from finhrm_cli.run import store
    from finhrm_cli.train import step
    from finhrm_cli.config import ModelConfig, to_dict

    m = ModelConfig(n_features=3, seq_len=4, d_model=16, n_heads=2, h_layers=1, l_layers=1,
                    h_cycles=1, l_cycles=1, halt_max_steps=1)
    writer = store.RunWriter(tmp_path / "r")
    writer.save_config({"model": to_dict(m)})
    writer.save_weights(step.build_model(m, 0))
    return store, step, m, writer


def test_a_crash_while_weights_are_replaced_leaves_a_loadable_run(tmp_path, monkeypatch):
    import os

    store, step, m, writer = _small_run(tmp_path)
    old = (writer.path / "model.safetensors").read_bytes()
    store.load_run(writer.path)

    # crash just before the rename: the old file stays, config.json accepts it
    real_replace = os.replace

    def boom(src, dst):
        if Path(dst).name == "model.safetensors":
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        writer.save_weights(step.build_model(m, 1))
    monkeypatch.setattr(store.os, "replace", real_replace)
    assert (writer.path / "model.safetensors").read_bytes() == old
    assert json.loads((writer.path / "config.json").read_text()).get("weights_sha256_next")
    store.load_run(writer.path)

    # crash after the rename, before config.json drops the old digest: the new file loads
    real_save = store.RunWriter.save_config
    calls = []

    def second_fails(self, cfg):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(self, cfg)

    monkeypatch.setattr(store.RunWriter, "save_config", second_fails)
    with pytest.raises(KeyboardInterrupt):
        writer.save_weights(step.build_model(m, 2))
    monkeypatch.setattr(store.RunWriter, "save_config", real_save)
    assert (writer.path / "model.safetensors").read_bytes() != old
    store.load_run(writer.path)
    # and a file that is neither digest is refused
    (writer.path / "model.safetensors").write_bytes(old[:-1] + bytes([old[-1] ^ 1]))
    with pytest.raises(store.RunError, match="does not match its checksum"):
        store.load_run(writer.path)


def test_digest_added_when_an_old_run_is_resumed(tmp_path):
    store, step, m, writer = _small_run(tmp_path)
    cfg = json.loads((writer.path / "config.json").read_text())
    cfg.pop("weights_sha256")
    (writer.path / "config.json").write_text(json.dumps(cfg))
    writer.save_weights(step.build_model(m, 3))
    cfg = json.loads((writer.path / "config.json").read_text())
    assert cfg["weights_sha256"] == store.file_sha256(writer.path / "model.safetensors")
