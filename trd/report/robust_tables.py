"""The robust-transfer tables: CARTL's Acc / Rob per model under white-box PGD, and Renofeation's Clean / ASR per
model under the target-agnostic attack crafted on the public pretrained model (Tables 2 and 4 of the paper)."""
from __future__ import annotations

from trd.report.cells import aggregate
from trd.report.records import variant_name
from trd.report.tables import Experiment, Table


def robustness_table(ex: Experiment) -> Table:
    records = [r for r in ex.of("pgd") if r.ok]
    steps = sorted({int(s) for r in records for s in r.metrics.get("rob_at", {})})
    eps = sorted({r.metrics.get("eps") for r in records if r.metrics.get("eps") is not None})
    columns = ["Acc"] + [f"Rob PGD-{s}" for s in steps] if steps else ["Acc", "Rob"]
    table = Table("robustness", "Robust transfer: clean and robust accuracy on the target (white-box PGD)", columns,
                  caption=f"Acc: clean test accuracy of the released model; Rob PGD-s: its accuracy on L-inf PGD "
                          f"examples after s steps (eps {', '.join(f'{e * 255:.3g}/255' for e in eps)} in pixels, "
                          f"random start), crafted on that model itself. Means over replicates.")
    for variant in ex.variants:
        attacked = ex.of("pgd", variant)
        if not attacked:
            continue
        cells = {"Acc": aggregate(attacked, "acc", samples="test_samples")}
        for s in steps:
            cells[f"Rob PGD-{s}"] = aggregate(attacked, f"rob_at.{s}", samples="test_samples")
        if not steps:
            cells["Rob"] = aggregate(attacked, "rob", samples="test_samples")
        table.add(variant_name(variant), cells)
    return table


def agnostic_table(ex: Experiment) -> Table:
    table = Table("agnostic", "Target-agnostic attack: clean accuracy and attack success rate", ["Clean", "ASR"],
                  caption="Clean: test accuracy of the released model; ASR: the share of the test images it "
                          "classifies right whose perturbation, crafted on the public pretrained model's "
                          "penultimate features (the released model never seen), it then classifies wrong. Lower "
                          "ASR at equal clean accuracy is the better defence.")
    for variant in ex.variants:
        attacked = ex.of("agnostic", variant)
        if attacked:
            table.add(variant_name(variant), {"Clean": aggregate(attacked, "clean", samples="test_samples"),
                                              "ASR": aggregate(attacked, "asr", samples="attacked")})
    return table


def robust_tables(ex: Experiment) -> list[Table]:
    """The tables of the attacks this experiment ran."""
    return ([robustness_table(ex)] if ex.of("pgd") else []) + ([agnostic_table(ex)] if ex.of("agnostic") else [])
