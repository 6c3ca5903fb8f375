"""The Triton kernels compiled for real GPUs (sm_80, sm_90) on this CPU machine: one pass, 128-bit accesses."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import PYTHON, REPO, python_env

pytest.importorskip("triton")

from sophia_train_kernels import codegen  # noqa: E402

SCRIPT = REPO / "bench" / "compile_kernels.py"


def test_traffic_is_read_off_the_ptx():
    ptx = """
        @%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
        ld.global.L1::evict_last.b16 { %rs1 }, [ %rd2 + 0 ];
        @%p2 st.global.v2.b32 [ %rd3 + 0 ], { %r5, %r6 };
        @%p3 atom.global.gpu.acq_rel.add.u32 %r7, [ %rd4 + 0 ], %r8;
    """
    t = codegen.global_traffic(ptx, threads=128, block=256)  # 2 elements per thread
    assert t["read"] == (16 + 2) / 2 and t["write"] == 8 / 2 and t["widths"] == [16, 64, 128]
    assert codegen.approximate_ops("div.full.f32 %r1, %r2, %r3;\n div.rn.f32 %r4, %r2, %r3;\n sqrt.approx.ftz.f32 %r5, %r1;") == [
        "div.full.f32", "sqrt.approx.ftz.f32"]


DEVICE_TRITON = "3.6.0"  # the GPU machine's image (/work/.library/device/KINDS.md); the venv has the current one


def compiled_rows(extra_path: str | None = None) -> tuple[str, list[list[str]]]:
    """bench/compile_kernels.py's table for sm_80 and sm_90 (``extra_path`` first on the path: another Triton)."""
    env = python_env()
    env.pop("TRITON_INTERPRET", None)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH")]))
    out = subprocess.run([PYTHON, str(SCRIPT), "--arch", "80", "90", "--check"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.stdout.splitlines() if line.startswith("| sm_")]
    return out.stdout, rows


def check_rows(rows: list[list[str]]) -> None:
    """Every variant on both architectures: one pass, IEEE division, 128-bit accesses on padded buffers."""
    n_variants = len(codegen.variants(1024))
    assert len(rows) == 2 * (n_variants + 1)
    kernels = {r[1] for r in rows}
    assert kernels == {"sophia_step", "hessian_ema", "lion", "s3"}
    for arch, kernel, variant, read, write, ideal, widths, single, approx in rows:
        assert single == "yes", (arch, kernel, variant)
        # IEEE division and square root everywhere; only S3's |g|^p and its root go through exp2/log2
        allowed = {"ex2.approx.f32", "lg2.approx.f32", "none"} if kernel == "s3" else {"none"}
        assert set(approx.split(", ")) <= allowed, (arch, kernel, variant, approx)
        assert float(read) + float(write) == sum(int(x) for x in ideal.split("+"))
        # the padded flat buffers give 128-bit accesses; an odd length would give scalar ones
        assert widths == ("32-bit" if "n%16!=0" in variant else "128-bit"), (arch, kernel, variant, widths)
    fp32_sophia = [r for r in rows if r[1] == "sophia_step" and r[2].startswith("fp32")]
    assert all(float(r[3]) == 16 and float(r[4]) == 8 for r in fp32_sophia)  # read p, g, m, h; write p, m


def test_every_kernel_compiles_for_a100_and_h100_as_one_pass_with_128_bit_accesses():
    check_rows(compiled_rows()[1])


@pytest.mark.slow
def test_every_kernel_compiles_with_the_device_images_triton(tmp_path):
    """Triton 3.6 (the GPU image's) once typed the S3 kernel's 1e-38 fp64 and refused it; the current Triton did
    not. Both must compile every variant, so the device's own Triton gets a second, throwaway install here."""
    import shutil

    target = tmp_path / "triton"
    pip = subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), f"triton=={DEVICE_TRITON}"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    try:
        text, rows = compiled_rows(str(target))
        assert text.startswith(f"# triton {DEVICE_TRITON}"), text[:200]
        check_rows(rows)
    finally:
        shutil.rmtree(target, ignore_errors=True)  # ~0.6 GB


def test_the_optimizers_and_kernels_import_from_a_plain_checkout(tmp_path):
    """A venv where the project is not installed (only its dependencies are on the path) and PYTHONPATH=<repo>:
    the machine that runs the device checks. Constructing SophiaG/Lion/S3, fused under the interpreter too."""
    import subprocess
    import sys
    import sysconfig

    from conftest import REPO

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch etc., not the editable install
    code = ("import sys, torch\n"
            "try:\n    import sophia_train_kernels\n    sys.exit('installed: not a plain checkout')\nexcept ModuleNotFoundError: pass\n"
            "from sophia_train.optim import Lion, SoftSignSGD, SophiaG\n"
            "for cls in (SophiaG, Lion, SoftSignSGD):\n"
            "    for fused in (False, True):\n"
            "        p = torch.nn.Parameter(torch.ones(4)); opt = cls([p], lr=0.1, fused=fused); p.grad = torch.ones(4)\n"
            "        opt.step(**({'bs': 4} if cls is SophiaG else {}))\n"
            "import sophia_train_kernels.codegen\n"
            "print('ok', sophia_train_kernels.__file__)\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "1", "HOME": str(tmp_path)}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok") and str(REPO / "kernels") in done.stdout


def test_no_kernel_literal_is_typed_fp64_by_triton():
    """Triton types a Python float literal fp32 only when it is 0, inf, nan or a normal float32 (2**-126 <= |x| <=
    fp32 max), else fp64; Triton 3.6's tl.div_rn then refused the S3 kernel's 1e-38 on sm_90. Every literal inside
    a @triton.jit function must stay fp32, whichever Triton compiles it."""
    import ast
    import math

    smallest_normal, largest = 2.0**-126, (2 - 2.0**-23) * 2.0**127
    bad = []
    for path in sorted((REPO / "kernels" / "sophia_train_kernels").glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef) or not any("jit" in ast.unparse(d) for d in fn.decorator_list):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Constant) and isinstance(node.value, float):
                    x = abs(node.value)
                    if not (x == 0 or math.isinf(x) or math.isnan(x) or smallest_normal <= x <= largest):
                        bad.append(f"{path.name}:{node.lineno} {fn.name}: {node.value!r}")
    assert not bad, bad
