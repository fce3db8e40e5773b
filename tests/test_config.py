import pytest

from ddp_eval.config import apply_override, load_config
from ddp_eval.errors import DdpEvalError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


BASE = "model:\n  path: m\ndata:\n  path: d.tsv\n"


def test_defaults_match_vlmevalkit_for_qwen2_vl(tmp_path):
    from ddp_eval.models.qwen2_vl import FAMILY
    from ddp_eval.tasks.base import TaskSettings

    cfg = load_config(write(tmp_path, BASE))
    pixels = FAMILY.pixels(cfg, TaskSettings())  # the family's default where the config sets none
    assert (pixels.min_pixels, pixels.max_pixels) == (1280 * 28 * 28, 16384 * 28 * 28)
    assert cfg.generation.greedy is True
    assert cfg.generation.repetition_penalty == 1.0  # VLMEvalKit passes 1.0, whatever the checkpoint says


def test_set_overrides_nested_keys_with_yaml_values(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["run.batch_size=32", "data.limit=null", "generation.greedy=false"])
    assert cfg.run.batch_size == 32
    assert cfg.data.limit is None
    assert cfg.generation.greedy is False


def test_unknown_key_is_named_with_the_valid_ones(tmp_path):
    with pytest.raises(DdpEvalError) as err:
        load_config(write(tmp_path, BASE + "run:\n  batchsize: 4\n"))
    assert "run.batchsize" in str(err.value)
    assert "run.batch_size" in str(err.value)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(DdpEvalError, match="unknown config key modle"):
        load_config(write(tmp_path, BASE + "modle:\n  path: x\n"))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(DdpEvalError) as err:
        load_config(write(tmp_path, BASE), ["run.batch_size=eight"])
    assert "run.batch_size" in str(err.value) and "'eight'" in str(err.value)


def test_bool_is_not_accepted_as_int(tmp_path):
    with pytest.raises(DdpEvalError, match="run.batch_size"):
        load_config(write(tmp_path, BASE), ["run.batch_size=true"])


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(DdpEvalError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_required_paths_and_bad_choices(tmp_path):
    with pytest.raises(DdpEvalError, match="model.path"):
        load_config(None, ["data.path=x"])
    with pytest.raises(DdpEvalError, match="model.dtype"):
        load_config(write(tmp_path, BASE), ["model.dtype=fp8"])
    with pytest.raises(DdpEvalError, match="min_pixels"):
        load_config(write(tmp_path, BASE), ["model.min_pixels=100", "model.max_pixels=10"])


def test_override_needs_equals_sign():
    with pytest.raises(DdpEvalError, match="key.sub=value"):
        apply_override({}, "run.batch_size")


def test_invalid_yaml_names_the_file(tmp_path):
    with pytest.raises(DdpEvalError, match="c.yaml is not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed\n"))


def test_yaml_is_safe_loaded_so_tags_do_not_execute(tmp_path):
    with pytest.raises(DdpEvalError, match="not valid YAML"):
        load_config(write(tmp_path, "model: !!python/object/apply:os.system ['echo pwned']\n"))


def test_prefix_reuse_names_every_setting_it_needs(tmp_path):
    with pytest.raises(DdpEvalError) as err:
        load_config(write(tmp_path, BASE), ["model.reuse_prefix=true", "model.reuse_vision=false",
                                            "generation.greedy=false"])
    assert "model.reuse_vision=true" in str(err.value) and "generation.greedy=true" in str(err.value)
    assert load_config(write(tmp_path, BASE), ["model.reuse_prefix=true"]).model.reuse_prefix is True


def test_decode_graphs_without_prefix_reuse_is_refused_naming_both_keys(tmp_path):
    with pytest.raises(DdpEvalError, match=r"model\.decode_graphs=true needs model\.reuse_prefix=true"):
        load_config(write(tmp_path, BASE), ["model.decode_graphs=true", "model.reuse_prefix=false"])
    from ddp_eval.models.base import resolve_speed
    from ddp_eval.models.qwen2_vl import FAMILY

    auto = load_config(write(tmp_path, BASE), ["model.decode_graphs=true"])  # reuse_prefix null: off on the CPU
    with pytest.raises(DdpEvalError, match=r"model\.decode_graphs=true needs the shared-prefix decoder.* on cpu"):
        resolve_speed(auto, FAMILY, "5.24", "cpu")
    assert resolve_speed(auto, FAMILY, "5.24", "cuda").decode_graphs
    cfg = load_config(write(tmp_path, BASE), ["model.decode_graphs=true", "model.reuse_prefix=true"])
    assert cfg.model.decode_graphs is True


def test_a_suite_may_say_data_path_null():
    cfg = load_config(None, ["model.path=m", "data.path=null", "data.benchmarks=[a, b]"])
    assert cfg.data.path == "" and cfg.data.benchmarks == ["a", "b"]


def test_a_key_given_twice_in_the_config_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("model:\n  path: a\n  dtype: float32\n  path: b\ndata:\n  path: x\n")
    with pytest.raises(DdpEvalError, match=r"key 'path' is given twice\s+in .*line 4"):
        load_config(path, [])
    import yaml

    from ddp_eval.config import _UniqueKeyLoader

    merged = "base: &b\n  path: a\n  dtype: float32\nmodel:\n  <<: *b\n  path: m\n"  # an override, no repeat
    assert yaml.load(merged, Loader=_UniqueKeyLoader) == yaml.safe_load(merged)
