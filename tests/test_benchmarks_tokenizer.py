"""The tokenizer benchmark's report: its structure on a small slice (never its timings)."""

import re

import pytest

pytest.importorskip("tokenizers")

from llmcourse.benchmarks import __main__ as benchmarks
from llmcourse.benchmarks.tokenizer import main, report

NUMBER = r"[\d,]+\.\d+"


def test_quick_run_prints_every_figure_and_matches_hugging_face(capsys):
    assert benchmarks.main(["tokenizer", "--quick"]) == 0  # 1 would mean the ids differed from HF's
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("byte-level BPE on 50,000 bytes of Shakespeare, vocabulary 512 (256 merges,")
    rows = {line[:22].strip(): line[22:] for line in out}
    for row, label in [("train (s)", "course/hf"), ("encode cold (MB/s)", "hf/course"),
                       ("encode warm (MB/s)", "hf/course"), ("encode lines (MB/s)", "hf/course")]:
        assert re.fullmatch(rf"\s+{NUMBER}\s+{NUMBER}\s+{NUMBER} {re.escape(label)}", rows[row]), (row, rows.get(row))
        course, hf, ratio = (float(x.replace(",", "")) for x in rows[row].split()[:3])
        expected = course / hf if label == "course/hf" else hf / course
        assert ratio == pytest.approx(expected, rel=0.1, abs=0.06)  # the ratio is of the printed figures
    assert "same ids as hf (whole text, and line by line): yes" in out
    assert re.fullmatch(r"merges equal hf's until the first tie: [\d,]+ of 256", out[-2])
    assert out[-1] == "targets: not judged (they are stated for 1,000,000 bytes and 4,096 tokens)"


def test_targets_are_judged_only_at_full_size():
    r = dict(megabytes=1.0, vocab_size=4096, merges=3840, tokens=300_000, train_s=31.0, hf_train_s=0.5,
             encode_mbps=0.5, encode_warm_mbps=2.0, hf_encode_mbps=2.0, lines_mbps=1.0, hf_lines_mbps=4.0,
             same_ids=True, merges_agree=100, hf_version="x")
    assert report(r, full_size=True).splitlines()[-1] == "targets: train <= 30 s MISSED; encode >= 1 MB/s MISSED"
    r.update(train_s=1.0, encode_mbps=3.0)
    assert report(r, full_size=True).splitlines()[-1] == "targets: train <= 30 s met; encode >= 1 MB/s met"


def test_bad_options_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--vocab-size", "100"])
    assert e.value.code == 2 and "--vocab-size at least 257" in capsys.readouterr().err
