"""The evaluation harness on tiny data (the full runs are documented commands in BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from rag_bot.errors import InputError
from rag_bot.eval.sts import evaluate_sts, read_sts, sts_file

ROWS = [
    ("2.500", "A girl is styling her hair.", "A girl is brushing her hair."),
    ("5.000", "A man is playing the guitar.", "A man plays a guitar."),
    ("0.000", "A man is playing the guitar.", "The stock market fell sharply today."),
    ("4.200", "Two dogs run on the beach.", "Two dogs are running along the shore."),
    ("0.400", "A woman is slicing an onion.", "A child rides a bicycle in the park."),
    ("1.600", "A cat sleeps on the sofa.", "A dog sleeps on the floor."),
]


def write_sts(folder, rows=ROWS, split="test"):
    folder.mkdir(exist_ok=True)
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score}\t{a}\t{b}" for i, (score, a, b) in enumerate(rows)]
    lines[0] += "\textra\tfields"  # some official rows carry more than 7 fields
    (folder / f"sts-{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.slow
def test_sts_correlations_with_the_real_model(tmp_path, minilm):
    pairs = read_sts(sts_file(write_sts(tmp_path / "sts")))
    assert len(pairs) == 6 and pairs[0].score == 2.5 and pairs[0].sentence2 == "A girl is brushing her hair."
    figures = evaluate_sts(minilm, pairs, progress=False)
    assert figures["pairs"] == 6
    assert figures["spearman"] > 0.8 and figures["pearson"] > 0.8  # paraphrases above unrelated pairs


def test_sts_input_errors_name_the_file_and_line(tmp_path):
    folder = write_sts(tmp_path / "sts")
    with pytest.raises(InputError, match=r"sts-dev.csv: not found; --sts takes the stsbenchmark folder"):
        sts_file(folder, "dev")
    with pytest.raises(InputError, match=r"--split: 'valid' is not an STS Benchmark split"):
        sts_file(folder, "valid")
    path = folder / "sts-test.csv"
    path.write_text(path.read_text() + "genre\tfile\t2012\t0099\tabc\tone\ttwo\n")
    with pytest.raises(InputError, match=r"sts-test.csv: line 7: the score 'abc' is not a number"):
        read_sts(path)
    path.write_text("only\tthree\tfields\n")
    with pytest.raises(InputError, match=r"line 1: expected 7 tab-separated fields, found 3"):
        read_sts(path)
