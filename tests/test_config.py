"""Every kind of bad config is rejected at load time with a message naming the field."""

import pytest

from trainer.config import ARCHS as CONFIG_ARCHS
from trainer.config import ConfigError, LossConfig, TrainConfig, flatten, load_config
from trainer.data import DATASETS
from trainer.losses import LOSSES
from trainer.models import ARCHS


@pytest.mark.parametrize(
    "overrides,field",
    [
        (["epochs_typo=3"], "epochs_typo"),  # unknown top-level key
        (["loss.lamda=1e-3"], "loss.lamda"),  # unknown nested key
        (["loss.lam=-1e-3"], "loss.lam"),  # negative λ
        (["loss.mu=-1"], "loss.mu"),
        (["loss.sigma=0"], "loss.sigma"),  # σ ≤ 0
        (["loss.sigma=-0.01"], "loss.sigma"),
        (["loss.tau=0"], "loss.tau"),
        (["loss.samples=0"], "loss.samples"),
        (["loss.kind=focal"], "loss.kind"),  # unknown loss
        (["loss.estimator=exact"], "loss.estimator"),
        (["loss.preset=magic"], "loss"),  # unknown preset
        (["model.arch=resnet50"], "model.arch"),  # unknown arch
        (["model.width=0"], "model.width"),
        (["data.dataset=imagenet"], "data.dataset"),  # unknown dataset
        (["data.crop_padding=-1"], "data.crop_padding"),
        (["data.val_size=-0.1"], "data.val_size"),  # negative validation split
        (["data.val_size=12.5"], "data.val_size"),  # neither a fraction nor a count
        (["model.arch=vgg11_released"], "model.arch"),  # the released judge on 8x8 digits
        (["device=tpu"], "device"),  # bad device
        (["optim.milestones=[0.75, 0.5]"], "optim.milestones"),  # bad milestones
        (["optim.milestones=[0.5, 1.5]"], "optim.milestones"),
        (["optim.lr=0"], "optim.lr"),
        (["optim.momentum=1"], "optim.momentum"),
        (["epochs=0"], "epochs"),
        (["batch_size=0"], "batch_size"),
        (["eval.every=-1"], "eval.every"),
        (["epochs=ten"], "epochs"),  # wrong type
        (["loss=3"], "loss"),  # a value where a section belongs
    ],
)
def test_bad_values_are_rejected_naming_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config({}, overrides)
    assert field in str(err.value)


def test_bad_dict_sections_are_rejected():
    with pytest.raises(ConfigError, match="model.depth: unknown key"):
        load_config({"model": {"depth": 3}})
    with pytest.raises(ConfigError, match="loss.lam"):
        load_config({"loss": {"preset": "score_matching", "lam": -1}})


def test_bad_yaml_files_are_rejected(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("loss: {kind: ce\n  lam: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(typo)
    with pytest.raises(ConfigError, match="key=value"):
        load_config({}, ["epochs"])


def test_presets_carry_the_papers_values_and_fields_override_them():
    sm = load_config({"loss": {"preset": "score_matching"}}).loss
    assert (sm.kind, sm.lam, sm.mu, sm.sigma) == ("score_matching", 1e-3, 1e-4, 0.01)
    anti = LossConfig(preset="anti_score_matching")
    assert (anti.lam, anti.tau) == (1e-4, 1000.0)
    released = LossConfig(preset="anti_score_matching_released")
    assert (released.tau, released.sigma) == (1e4, 1e-3)
    # The released train.py's score matching (λ 1e-5, stability weight 1e-3, σ 0.01): Appendix D's best cell.
    sm_released = LossConfig(preset="score_matching_released")
    assert (sm_released.kind, sm_released.lam, sm_released.mu, sm_released.sigma) == ("score_matching", 1e-5, 1e-3, 0.01)
    assert LossConfig(preset="grad_norm").lam == 1e-3
    assert load_config({}, ["loss.preset=score_matching", "loss.lam=1e-5"]).loss.lam == 1e-5


def test_config_names_match_the_registries():
    # The Literal choices in the config and the registries that serve them must agree.
    fields = TrainConfig.model_fields
    assert set(LOSSES) == set(LossConfig.model_fields["kind"].annotation.__args__)
    assert set(ARCHS) == set(fields["model"].annotation.model_fields["arch"].annotation.__args__)
    assert set(ARCHS) == set(CONFIG_ARCHS)
    assert set(DATASETS) == set(fields["data"].annotation.model_fields["dataset"].annotation.__args__)


def test_defaults_are_the_papers_training_setup():
    cfg = load_config()
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.1, 0.9, 5e-4)
    assert cfg.optim.milestones == [0.5, 0.75] and cfg.batch_size == 128 and cfg.epochs == 200
    assert flatten(cfg)["loss.sigma"] == 0.01
    # Beyond the paper: a tenth of the training set is held out to select by (0 turns it off).
    assert cfg.data.val_size == 0.1


def test_released_judge_arch_needs_images_of_16_px():
    with pytest.raises(ConfigError) as err:
        load_config({}, ["model.arch=vgg11_released"])
    assert str(err.value) == (
        "model.arch: vgg11_released needs images of at least 16 px (four 2x max-pools), "
        "but data.dataset=digits has 8 px: use vgg11"
    )
    assert load_config({}, ["model.arch=vgg11_released", "data.dataset=cifar10"]).model.arch == "vgg11_released"
    ok = ["model.arch=vgg11_released", "data.dataset=synthetic", "data.image_size=16"]
    assert load_config({}, ok).model.arch == "vgg11_released"


def test_validation_size_counts_are_whole_numbers():
    assert load_config({}, ["data.val_size=5e3"]).data.val_size == 5000  # YAML's 5e3 is a float
    assert isinstance(load_config({}, ["data.val_size=5000"]).data.val_size, int)
    assert load_config({}, ["data.val_size=0"]).data.val_size == 0
