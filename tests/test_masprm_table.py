"""The MASPRM table from hand-made strategy results: success rates, measured spend beside each
row, and the paired sign test on discordant questions (exact binomial, by hand)."""
from experiments.tables import masprm


def _result(success, samples):
  return {"success": success, "samples": [samples] * len(success),
          "tokens": [2 * samples] * len(success), "seconds": 1.0,
          "samples_per_question": float(samples), "tokens_per_question": 2.0 * samples,
          "generate_calls": 3.0, "scorer_calls": 3.0, "leaves_per_call": 4.0}


def test_write_table_reports_spend_and_the_paired_sign_test(tmp_path):
  # 4 questions: majority vote solves q0, q1; MCTS solves q0, q2, q3 (+2 gained / -1 lost).
  per_strategy = {"straight_through": _result([True, False, False, False], 3),
                  "majority_vote": _result([True, True, False, False], 15),
                  "best_of_n": _result([False, False, False, False], 15),
                  "beam": _result([True, True, True, True], 15),
                  "mcts": _result([True, False, True, True], 13)}
  results = {(0, split): per_strategy for split in masprm.SPLITS}
  paths = masprm.write_table(results, "tiny", 1, [{"eval/auc": 0.6}], str(tmp_path))
  text = open(paths[0]).read()
  assert "| majority vote, 5 passes | 50.0 | 15.0 | 30.0 | 4.0 | 1 |" in text
  # P(X >= 2), X ~ Bin(3, 1/2) = 4/8.
  assert f"mcts > majority_vote: +2 / -1 questions, p = {4 / 8:.3g}" in text
  # beam vs straight-through: +3 / -0, p = 1/8.
  assert f"beam > straight_through: +3 / -0 questions, p = {1 / 8:.3g}" in text
  assert paths[-1].endswith("masprm.png")
