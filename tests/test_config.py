import pytest

from itemlm.bench.grid import BenchConfig
from itemlm.config import PRESETS, load_config
from itemlm.errors import InputError
from itemlm.train.stage1 import Stage1Config
from itemlm.demo import DEMO_BUDGET, FAST_BUDGET
from itemlm.train.stage2 import Stage2Config


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_every_preset_loads(preset):
    if preset.startswith("bench"):
        config = load_config(BenchConfig, preset)
        assert config.bridges and config.seeds
        # the recipe overrides a bench passes must load into the recipes' configs too
        for dataset in config.datasets:
            assert load_config(Stage1Config, config.stage1_preset, config.stage1 + config.dataset_overrides(dataset, "stage1")).steps > 0
            assert load_config(Stage2Config, config.stage2_preset, config.stage2 + config.dataset_overrides(dataset, "stage2")).steps > 0
    elif preset.startswith("stage2"):
        config = load_config(Stage2Config, preset)
        assert config.steps > 0 and config.bridge == "ilm"
    elif preset == "standard":
        config = load_config(Stage2Config, preset)
        assert config.warm_start.enabled and config.warm_start.solve and config.validate_every > 0
        assert any(p.get("task_weights") == {"item_title": 1.0} for p in config.curriculum)  # a naming phase
        assert config.mf.tuned and config.system_prompt == "" and config.dataset == "ml-100k-text"
        for budget in (DEMO_BUDGET, FAST_BUDGET):  # the demo's budgets are overrides of this preset
            assert load_config(Stage2Config, preset, budget).steps > 0
    else:
        config = load_config(Stage1Config, preset)
        assert config.steps > 0 and config.variant.startswith("ilm-it")


def test_stage2_needs_a_stage1_model_for_the_ilm_bridge():
    with pytest.raises(InputError, match="stage1_model"):
        load_config(Stage2Config, "stage2-quick", ["stage1_model=null"])
    assert load_config(Stage2Config, "stage2-quick", ["bridge=mlp", "stage1_model=null"]).bridge == "mlp"


def test_variant_presets_name_their_variant():
    for variant in ("ilm-it", "ilm-it-ii", "ilm-it-ui", "ilm-it-ii-ui"):
        assert load_config(Stage1Config, variant).variant == variant


def test_overrides_reach_nested_fields_and_are_typed():
    config = load_config(Stage1Config, "stage1-quick", ["qformer.num_queries=4", "learning_rate=3e-4", "mf.factors=32"])
    assert config.qformer.num_queries == 4 and config.learning_rate == 3e-4 and config.mf.factors == 32


@pytest.mark.parametrize(
    "override, message",
    [
        ("qformer.num_querys=4", "override 'qformer.num_querys=4': 'qformer.num_querys' is not a setting"),
        ("steps=many", "'steps' must be a whole number"),
        ("steps.x=5", "'steps' is a single setting"),
        ("steps=[1,", r"override 'steps=\[1,': the value is not valid YAML"),
        ("steps=true", "override 'steps=true': 'steps' must be a whole number"),
        ("steps=-5", "'steps' must not be negative"),
        ("batch_size=0", "'batch_size' must be at least 1"),
        ("learning_rate=.nan", "'learning_rate' must be a finite number"),
        ("qformer=3", "'qformer' must be a mapping of its settings"),
        ("variant=ilm-xx", "unknown variant 'ilm-xx'"),
        ("no-equals-sign", "is not key=value"),
    ],
)
def test_bad_overrides_are_named(override, message):
    with pytest.raises(InputError, match=message):
        load_config(Stage1Config, "stage1-quick", [override])


def test_stage2_overrides_of_the_wrong_shape_are_named():
    from itemlm.train.stage2 import Stage2Config

    for override, message in [("task_weights=[1,2]", "'task_weights' must be a mapping"), ("bridge=foo", "override 'bridge=foo'"),
                              ("ranking.candidates=40", "ranking.candidates must be between"),
                              ("eval_prompts=both", "'eval_prompts' must be one of seen, unseen, all")]:
        with pytest.raises(InputError, match=message):
            load_config(Stage2Config, "standard", [override])


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin.yaml: not UTF-8 text"):
        load_config(Stage1Config, path)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("steps: [1,\n")
    with pytest.raises(InputError, match="broken.yaml"):
        load_config(Stage1Config, path)
