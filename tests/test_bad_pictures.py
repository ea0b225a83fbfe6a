"""A picture that cannot be read or decoded, met in the middle of a run: the run stops with the file named, keeps
its work in a checkpoint of the iterations done, and, resumed once the file is replaced, ends exactly as a run
that never met it."""
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_seeds import _same_run  # noqa: E402
from test_train import resdsl  # noqa: E402
from resdsl.train.data import load_dataset  # noqa: E402
from test_train_data import make_folder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "tests" / "specs" / "tiny_folder.res")


def train(*args):
    return resdsl("train", TINY, "--device", "cpu", "--workers", "0", "--quiet", "--iters", "4", "--eval-every", "2",
                  "--checkpoint-every", "4", *args)


def test_a_broken_test_picture_keeps_the_work_and_the_resumed_run_is_exact(tmp_path):
    good = tmp_path / "good"
    make_folder(good, per_class=4, size=(48, 40))
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "val" / "dog" / "1.jpg").write_bytes((good / "val" / "dog" / "1.jpg").read_bytes()[:200])  # truncated
    r = train("--data", str(bad), "--out", str(tmp_path / "run"))
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"cannot decode the image {bad / 'val' / 'dog' / '1.jpg'}" in r.stderr
    assert "A checkpoint of the 2 iterations done was written" in r.stderr and "--resume" in r.stderr
    assert (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
    shutil.copy(good / "val" / "dog" / "1.jpg", bad / "val" / "dog" / "1.jpg")  # the file replaced
    r = resume(tmp_path / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    r = train("--data", str(bad), "--out", str(tmp_path / "never"))  # the same folder, never broken
    assert r.returncode == 0, r.stderr[-2000:]
    _same_run(tmp_path / "run", tmp_path / "never")  # the evaluation the run missed was made on resuming
    # a row lost otherwise (a damaged line) is not made up: the run is finished, and stays as it is
    rows = (tmp_path / "never" / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "never" / "metrics.jsonl").write_text("\n".join(rows[:-1] + [rows[-1][:30]]) + "\n")
    r = resume(tmp_path / "never")
    assert r.returncode == 1 and "already finished all 4 iterations" in r.stderr, r.stderr[-2000:]


def test_a_failed_last_evaluation_is_made_on_resuming_and_checkpointed(tmp_path):
    """The evaluation at the run's last iteration fails: resumed, the run makes it, then its final test, and its
    checkpoint (running sums, schedule) is the one of a run that never failed."""
    good = tmp_path / "good"
    make_folder(good, per_class=4, size=(48, 40))
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "val" / "cat" / "2.png").write_bytes(b"")
    r = train("--data", str(bad), "--eval-every", "4", "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and "A checkpoint of the 4 iterations done was written" in r.stderr, r.stderr[-2000:]
    shutil.copy(good / "val" / "cat" / "2.png", bad / "val" / "cat" / "2.png")
    assert resume(tmp_path / "run").returncode == 0
    assert train("--data", str(bad), "--eval-every", "4", "--out", str(tmp_path / "never")).returncode == 0
    _same_run(tmp_path / "run", tmp_path / "never")
    mine, theirs = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("run", "never"))
    assert {k: v for k, v in mine["state"].items() if k != "elapsed"} == {
        k: v for k, v in theirs["state"].items() if k != "elapsed"} | {"eval_missed": False}
    assert mine["schedule"] == theirs["schedule"]
    assert (tmp_path / "run" / "final-test.json").read_text() == (tmp_path / "never" / "final-test.json").read_text()


def resume(run):
    return resdsl("train", "--resume", str(run), "--quiet")


def test_a_broken_training_picture_at_the_first_batch_writes_no_checkpoint(tmp_path):
    folder = tmp_path / "f"
    make_folder(folder, per_class=2, size=(48, 40))
    for name in ("cat", "dog"):
        for path in (folder / "train" / name).iterdir():
            path.write_bytes(b"")  # every training picture: the first batch cannot be made
    r = train("--data", str(folder), "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and "(the file is empty); remove or replace the file" in r.stderr, r.stderr[-2000:]
    assert "checkpoint" not in r.stderr.split("error:")[-1] and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_hidden_folders_are_no_classes(tmp_path):
    make_folder(tmp_path)
    for part in ("train", "val"):  # a notebook's checkpoints, with a picture in it
        make_folder(tmp_path / part / ".ipynb_checkpoints", classes=("x",), per_class=1, parts=(".",))
    d = load_dataset(str(tmp_path))
    assert d.classes == ["cat", "dog"] and d.train_size == 6


def test_a_broken_picture_in_another_process_is_named_by_it(tmp_path):
    """Each process of a --nproc run reads its own share of the pictures: one that cannot be read in process 1's
    share is named by process 1 (only rank 0 speaks otherwise), not hidden behind rank 0's 'lost contact'."""
    folder = tmp_path / "f"
    make_folder(folder, per_class=2, size=(48, 40))
    for name in ("cat", "dog"):
        for path in (folder / "train" / name).iterdir():
            path.write_bytes(b"")
    r = train("--data", str(folder), "--out", str(tmp_path / "run"), "--nproc", "2", "--batch-size", "2")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "resdsl: error: process 1 of 2: cannot" in r.stderr and "(the file is empty)" in r.stderr, r.stderr[-3000:]
    assert "internal error" not in r.stderr


def test_a_named_pipe_among_the_pictures_is_named_not_waited_for(tmp_path):
    """A named pipe called like a picture would block the reader for ever: it is a picture that cannot be read."""
    import os

    from resdsl.train.decoding import read_bytes
    from resdsl.train.data import DataError

    pipe = tmp_path / "cat.jpg"
    os.mkfifo(pipe)
    with pytest.raises(DataError, match=r"cannot read the image .*cat\.jpg \(it is a named pipe, not a regular file\)"):
        read_bytes(str(pipe))


def _png16_rgb(levels) -> bytes:
    """A 16-bit RGB PNG (PIL cannot write one), chunk by chunk."""
    import struct
    import zlib

    h, w, _ = levels.shape
    raw = b"".join(b"\x00" + levels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _pngs() -> dict:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = {}
    for mode, shape in (("RGB", (30, 40, 3)), ("RGBA", (30, 40, 4)), ("L", (30, 40)), ("LA", (30, 40, 2)),
                        ("I;16", (30, 40))):
        buf = io.BytesIO()
        dtype = np.uint16 if mode == "I;16" else np.uint8
        levels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
        Image.fromarray(levels, "LA" if mode == "LA" else None).save(buf, format="PNG")
        out[mode] = buf.getvalue()
    buf = io.BytesIO()
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    rgb.convert("P", palette=Image.ADAPTIVE).save(buf, format="PNG", transparency=3)
    out["P"] = buf.getvalue()
    out["RGB;16"] = _png16_rgb(rng.integers(0, 65536, (30, 40, 3), dtype=np.uint16))
    return out


def test_pngs_decode_as_torchvision_decodes_them():
    """PNGs are decoded by PIL (see the next test), to the very pixels torchvision's decoder gives: 8 and 16 bits,
    grey, alpha and palette."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import to_dtype

    from resdsl.train import decoding

    for kind, png in _pngs().items():
        data = torch.frombuffer(bytearray(png), dtype=torch.uint8)
        reference = to_dtype(decode_image(data, mode=ImageReadMode.RGB), torch.uint8, scale=True)
        (mine,) = decoding.decode([data], [f"x-{kind}.png"], "cpu")
        assert torch.equal(mine, reference), kind


def test_a_broken_png_and_an_animated_gif_are_no_crash(tmp_path):
    """torchvision's PNG decoder ends the process (SIGSEGV) on a broken file: the file is named instead. An
    animated GIF is its first frame, as PIL shows it (torchvision gives every frame: a 4-d tensor)."""
    import io

    from PIL import Image

    from resdsl.train import decoding
    from resdsl.train.data import DataError

    png = bytearray(_pngs()["RGB"])
    png[png.find(b"IDAT") + 20] ^= 0xFF  # a flipped byte in the compressed pixels
    with pytest.raises(DataError, match=r"cannot decode the image broken.png \("):
        decoding.decode([torch.frombuffer(png, dtype=torch.uint8)], ["broken.png"], "cpu")
    frames = [Image.new("RGB", (12, 10), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    (img,) = decoding.decode([torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)], ["a.gif"], "cpu")
    assert img.shape == (3, 10, 12) and img[:, 0, 0].tolist() == [255, 0, 0]


def test_pngs_past_pils_own_limits_decode_and_broken_ones_are_named(monkeypatch):
    """A PNG past PIL's own limits (pixels, here lowered to 100; a text chunk over 1 MB) is no broken file: it is
    decoded, as torchvision decoded it; a broken one past them is named, never handed to torchvision's decoder
    (which ends the process)."""
    import io

    import numpy as np
    from PIL import Image, PngImagePlugin

    from resdsl.train import decoding
    from resdsl.train.data import DataError

    levels = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", "x" * (2 << 20), zip=True)
    buf = io.BytesIO()
    Image.fromarray(levels).save(buf, format="PNG", pnginfo=info)
    (img,) = decoding.decode([torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)], ["xmp.png"], "cpu")
    assert torch.equal(img, torch.from_numpy(levels).permute(2, 0, 1))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,200 pixels: past twice the limit, an error in PIL
    png = torch.frombuffer(bytearray(_pngs()["RGB"]), dtype=torch.uint8)
    (img,) = decoding.decode([png], ["large.png"], "cpu")
    assert img.shape == (3, 30, 40) and Image.MAX_IMAGE_PIXELS == 100  # the limit lifted for the file alone
    broken = bytearray(_pngs()["RGB"])
    broken[broken.find(b"IDAT") + 20] ^= 0xFF
    with pytest.raises(DataError, match="cannot decode the image large-broken.png"):
        decoding.decode([torch.frombuffer(broken, dtype=torch.uint8)], ["large-broken.png"], "cpu")
