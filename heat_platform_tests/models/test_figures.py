"""The loss-curve figure shows what training logged, for one network or an ensemble."""

from heat_platform.models import figures


def history(member=None):
    """Three logged steps as train_pinn records them (an ensemble member's carry ``member``)."""
    tag = {} if member is None else {"member": member}
    return [{**tag, "step": s, "loss": 2.0 / s, "loss_pde": 1.0 / s, "loss_data": 1.5 / s,
             "val_rmse": 0.1 + 1 / s, "lr": 1e-3} for s in (10, 20, 30)]


def test_the_loss_curves_show_every_loss_term_and_the_validation_rmse():
    axis = figures.loss_curves(history()).axes[0]
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert labels == ["loss", "loss_data", "loss_pde", "validation RMSE of u"]
    assert len(axis.lines) == 4 and axis.get_title() == "training"


def test_an_ensembles_members_each_draw_their_curves_in_their_terms_colours():
    axis = figures.loss_curves(history(0) + history(1) + history(2)).axes[0]
    assert len(axis.get_legend().get_texts()) == 4  # one entry per term, not per member
    assert len(axis.lines) == 12 and axis.get_title() == "training (3 members)"
    colours = [line.get_color() for line in axis.lines]
    assert colours[:3] == [colours[0]] * 3 and len(set(colours)) == 4
