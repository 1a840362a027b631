"""The Stage 3 classifier's optional dropout: active only in training, and invisible to saved weights."""
import torch

from dicefer.models.heads import Classifier


def test_dropout_changes_training_outputs_only_and_keeps_the_weights_names():
    torch.manual_seed(0)
    plain, dropped = Classifier(8, 7, 32), Classifier(8, 7, 32, dropout=0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    dropped.load_state_dict(plain.state_dict())  # runs saved without dropout load into one with it
    codes = torch.randn(16, 8)
    dropped.train()
    assert not torch.equal(dropped(codes), dropped(codes))
    plain.eval(), dropped.eval()
    assert torch.equal(dropped(codes), plain(codes))
