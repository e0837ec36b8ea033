import subprocess
import sys


def test_every_public_name_resolves_and_importing_the_package_loads_no_lightning():
    code = (
        "import sys, mmrwkv.training as t\n"
        "assert 'lightning' not in sys.modules\n"
        "missing = [n for n in t.__all__ if getattr(t, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert t.train_recipe.__module__ == 'mmrwkv.training.train'\n"
        "assert t.run_recipe.__module__ == 'mmrwkv.training.train_and_evaluate'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_is_an_attribute_error():
    import mmrwkv.training as t

    try:
        t.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("no AttributeError")
