from pathlib import Path

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
    elif preset == "standard-ilm":  # the standard recipe with the paper's bridge, on the model `stage1-standard` writes
        config, stage1 = load_config(Stage2Config, preset), load_config(Stage1Config, "stage1-standard")
        assert config.bridge == "ilm" and config.freeze_qformer and config.qformer_adapter == "all-query"
        assert Path(config.stage1_model) == stage1.out / "model"
        assert stage1.dataset == config.dataset and stage1.mf.tuned == config.mf.tuned  # the same MF vectors
        assert stage1.qformer.num_queries == config.mlp_tokens  # the MLP's title and tag slots, as query tokens
    elif preset == "standard":
        config = load_config(Stage2Config, preset)
        assert config.warm_start.enabled and config.warm_start.solve and config.validate_every > 0
        assert any(p.get("task_weights") == {"item_title": 1.0} for p in config.curriculum)  # a naming phase
        assert config.mf.tuned and config.system_prompt == "" and config.dataset == "ml-100k-text"
        for budget in (DEMO_BUDGET, FAST_BUDGET):  # the demo's budgets are overrides of this preset
            assert load_config(Stage2Config, preset, budget).steps > 0
    elif preset == "standard-chat":  # the standard recipe + the explanation task, in the mixture and the closing phase
        config, standard = load_config(Stage2Config, preset), load_config(Stage2Config, "standard")
        assert config.task_weights == {**standard.task_weights, "explanation": 2.0}
        assert config.curriculum[-1]["task_weights"]["explanation"] > 0 and config.steps == sum(p["steps"] for p in config.curriculum)
        assert config.warm_start == standard.warm_start and config.learning_rate == standard.learning_rate
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


def test_yes_no_on_off_are_text_where_a_setting_is_text_and_switches_where_it_is_true_or_false(tmp_path):
    config = load_config(Stage1Config, "stage1-quick", ["mixed_precision=no"])  # YAML 1.1 would read False
    assert config.mixed_precision == "no"
    stage2 = load_config(Stage2Config, "stage2-quick", ["shard_llm=yes", "compile=off"])
    assert stage2.shard_llm is True and stage2.compile is False
    path = tmp_path / "mine.yaml"
    path.write_text("base: stage1-quick\nmixed_precision: no\n")
    assert load_config(Stage1Config, path).mixed_precision == "no"


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
                              ("eval_prompts=both", "'eval_prompts' must be one of seen, unseen, all"),
                              # checked before any training, not when the finished run reloads its model
                              ("eval_dtype=fp16", "'eval_dtype' must be one of auto, float32"),
                              ("llm_dtype=half", "'llm_dtype' must be one of auto, float32"),
                              ("task_weights.item_title=abc", "'task_weights.item_title' must be a number >= 0, got 'abc'"),
                              ("task_weights.sequential=-1", "'task_weights.sequential' must be a number >= 0"),
                              ("task_weights.sequential=.nan", "'task_weights.sequential' must be a number >= 0"),
                              ("task_weights.novel=1", "'task_weights' names unknown tasks: novel"),
                              ("curriculum=[{steps: 10, task_weights: {item_title: null}}]",
                               "'curriculum\\[0\\].task_weights.item_title' must be a number >= 0, got None")]:
        with pytest.raises(InputError, match=message):
            load_config(Stage2Config, "standard", [override])


def test_unknown_keys_of_mixed_types_are_named(tmp_path):
    path = tmp_path / "odd.yaml"
    path.write_text("on: 1\nzebra: 2\n")  # YAML reads `on` as the boolean true
    with pytest.raises(InputError, match="is not a setting"):
        load_config(Stage1Config, path)


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


def test_a_config_can_start_from_a_preset_and_change_a_few_settings(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: standard\nname: mine\nwarm_start:\n  tag_tokens: 1\ncurriculum:\n  - steps: 7\n")
    standard, mine = load_config(Stage2Config, "standard"), load_config(Stage2Config, path, ["steps=9"])
    assert (mine.name, mine.steps, mine.warm_start.tag_tokens) == ("mine", 9, 1)
    assert mine.warm_start.solve == standard.warm_start.solve and mine.warm_start.ridge == standard.warm_start.ridge  # merged
    assert mine.curriculum == [{"steps": 7}]  # a list is replaced, not merged
    assert mine.task_weights == standard.task_weights and mine.ranking == standard.ranking


def test_a_base_can_be_a_file_beside_the_config_and_chains(tmp_path):
    (tmp_path / "first.yaml").write_text("base: stage1-quick\nsteps: 11\nlearning_rate: 0.001\n")
    (tmp_path / "second.yaml").write_text("base: first.yaml\nsteps: 12\n")
    config = load_config(Stage1Config, tmp_path / "second.yaml")
    assert (config.steps, config.learning_rate) == (12, 0.001)
    assert config.qformer.num_queries == load_config(Stage1Config, "stage1-quick").qformer.num_queries


@pytest.mark.parametrize("text, message", [
    ("base: loop.yaml\n", "leads back"),
    ("base: nowhere.yaml\n", "base 'nowhere.yaml'"),
    ("base: no-such-preset\n", "no preset named"),
    ("base: [standard]\n", "base must name a preset"),
])
def test_a_bad_base_is_named(tmp_path, text, message):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        load_config(Stage2Config, path)
    assert "loop.yaml" in str(error.value)


def test_the_bench_keys_a_preset_by_its_base_too(tmp_path):
    from itemlm.bench.grid import preset_identity

    (tmp_path / "base.yaml").write_text("steps: 1\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\n")
    before = preset_identity(str(tmp_path / "child.yaml"))
    (tmp_path / "base.yaml").write_text("steps: 2\n")
    preset_identity.cache_clear()
    assert preset_identity(str(tmp_path / "child.yaml")) != before
    assert preset_identity("standard").startswith("preset-sha256=")


def test_default_values_need_no_valid_config():
    from itemlm.config import default_values
    from itemlm.train.stage2 import Stage2Config

    defaults = default_values(Stage2Config)  # Stage2Config() itself is refused: bridge=ilm needs a stage-1 model
    assert defaults["bridge"] == "ilm" and defaults["eval_consensus"] == 0
    assert defaults["warm_start"]["enabled"] is False  # nested settings as dicts, as config.json holds them
    assert defaults["task_weights"]["sequential"] == 2.0


def test_one_entry_of_a_default_mapping_is_laid_over_that_default():
    from itemlm.train.stage2 import DEFAULT_WEIGHTS

    config = load_config(Stage2Config, "stage2-quick", ["task_weights.explanation=2"])  # the preset leaves task_weights at its default
    assert config.task_weights == {**DEFAULT_WEIGHTS, "explanation": 2.0}
    assert load_config(Stage2Config, "stage2-quick").task_weights == DEFAULT_WEIGHTS  # the default itself is untouched
    standard = load_config(Stage2Config, "standard", ["task_weights.explanation=2"])  # a preset's own mapping is merged into
    assert standard.task_weights["ranking"] == 2.0 and standard.task_weights["explanation"] == 2.0
