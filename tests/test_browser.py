"""Notebook 04's gate tuner used the way a person uses it: JupyterLab in a real (headless) Chromium.

JupyterLab serves a copy of notebook 04 pointed at a tiny LGL run paused before phase L; Playwright
drives Debian's ``chromium`` (no browser download): it runs the setup cell and the tuner, moves the
slider with the arrow keys and by typing a value, checks that the readout and the histogram's gate
line follow (and that the line sits above the slider's handle), presses "use this gate", checks
``gate_overrides.json``, runs the training cell and checks that phase L trained with that gate, then
reruns the tuner on the finished run (button disabled). Any browser console error fails the test.
A screenshot of the widget is saved (in ``$LGL_SCREENS_DIR`` when set, else the run's ``browser/``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus_params import tiny_data_params

from lgl_helpers.core.models import ECAPATDNN, save_encoder
from lgl_helpers.corpus.lists import read_train_list
from lgl_helpers.notebook import gate_tuner, stage2_view
from lgl_helpers.training import stage2

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    # papermill's parameterize validates its injected cell before it has an id (ids are set below)
    pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning"),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason="no Chromium at /usr/bin/chromium: `apt-get install chromium` (.ci/run installs it) to run the browser test",
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")

TIMEOUT_MS = 90_000  # one cell on a loaded 2-core machine, the first import of torch included


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def paused_run(tiny_corpus, tmp_path_factory):
    """A tiny LGL run paused before phase L of its only iteration: (config, stage folder)."""
    root = tmp_path_factory.mktemp("browser")
    torch.manual_seed(0)
    save_encoder(root / "stage1.model", ECAPATDNN(16).eval())
    entries = read_train_list(tiny_corpus / "lists" / "train_list.txt")
    config = stage2.LGLConfig(
        run_name="browser",
        runs_dir=str(root / "runs"),
        init_model=str(root / "stage1.model"),
        **tiny_data_params(tiny_corpus, augment=False),
        n_clusters=len({e.speaker for e in entries}),
        cluster_n_iter=5,
        frames=40,
        batch_size=16,
        max_epochs_per_phase=2,
        max_iterations=1,
        gates=["auto"],  # the tuner then resolves the gate itself, which logs a line
        pause_before_gate=True,
        workers=0,
        device="cpu",
        interactive=True,
    )
    stage_dir = stage2.stage_folder(config)
    # As the training cell does: the stage's log file is written while it trains, and only then.
    assert (
        stage2_view.train(dataclasses.replace(config, interactive=False), stage_dir)["status"] == "paused_before_gate"
    )
    return config, stage_dir


def _parameterized_copy(notebook: str, parameters: dict, folder) -> None:
    """``folder/<notebook>.ipynb``: the notebook with papermill's parameters cell injected, as a user
    would have set the parameters cell (every cell with an id, as nbformat 4.5 wants)."""
    import papermill.iorw
    import papermill.parameterize

    from lgl_helpers.app import planning

    node = papermill.iorw.load_notebook_node(str(planning.notebook_path(notebook)))
    node = papermill.parameterize.parameterize_notebook(node, parameters)
    for cell in node.cells:
        cell.setdefault("id", secrets.token_hex(4))  # the injected cell has none
    papermill.iorw.write_ipynb(node, str(folder / f"{notebook}.ipynb"))


@contextlib.contextmanager
def _jupyterlab(folder):
    """JupyterLab on a free local port (token, loopback only) serving ``folder``: yields (base url, token).

    Its own config, settings and workspace folders, so nothing of the machine's Jupyter set-up leaks
    in; the news and update checks are off (no network).
    """
    settings = folder / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(folder / ".config"),
        JUPYTERLAB_SETTINGS_DIR=str(folder / ".settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(folder / ".workspaces"),
        JUPYTER_RUNTIME_DIR=str(folder / ".runtime"),
        OMP_NUM_THREADS="1",
    )
    port, token = _free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0"]
    command += ["--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}"]
    command += ["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = open(folder / "jupyterlab.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(folder / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()  # jupyter_server shuts its kernels down on SIGTERM
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def lab(paused_run, tmp_path_factory):
    """JupyterLab serving notebook 04 with the paused run's parameters: yields (url of the notebook, folder)."""
    config, _ = paused_run
    folder = tmp_path_factory.mktemp("lab")
    _parameterized_copy(
        "04_stage2_lgl", {name: getattr(config, name) for name in stage2.LGLConfig.field_names()}, folder
    )
    with _jupyterlab(folder) as (base, token):
        yield f"{base}/lab/tree/04_stage2_lgl.ipynb?token={token}", folder


def _run_cell(page, needle: str) -> None:
    """Select the code cell whose source contains ``needle``, run it (Shift+Enter) and wait until it has run.

    On a loaded machine a click can land before JupyterLab has made the cell active, and the keys
    then go nowhere: the cell is checked to be active, and the key pressed again until the cell is queued.
    """
    cell = page.locator(".jp-Notebook .jp-CodeCell").filter(has_text=needle)
    prompt = cell.locator(".jp-InputPrompt")
    before = prompt.inner_text()
    for _ in range(5):
        prompt.click()
        try:
            playwright_api.expect(cell).to_have_class(re.compile(r"\bjp-mod-active\b"), timeout=5_000)
        except AssertionError:
            continue
        page.keyboard.press("Shift+Enter")
        try:  # "[*]:" once queued, "[n]:" once run
            playwright_api.expect(prompt).not_to_have_text(before, timeout=10_000)
            break
        except AssertionError:
            continue
    else:
        pytest.fail(f"cell {needle!r} could not be started (prompt {prompt.inner_text()!r})")
    playwright_api.expect(prompt).to_have_text(re.compile(r"\[\d+\]"), timeout=TIMEOUT_MS)
    errors = cell.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [text for text in errors.all_inner_texts() if "Traceback" in text or "Error" in text]
    assert not tracebacks, f"cell {needle!r} failed:\n{tracebacks[0][-2000:]}"


def _image_png(image) -> bytes:
    """The PNG the browser shows in an ``<img>`` (ipywidgets sets a blob: URL)."""
    encoded = image.evaluate(
        """async (img) => {
            const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
            let text = "";
            for (const b of bytes) text += String.fromCharCode(b);
            return btoa(text);
        }"""
    )
    return base64.b64decode(encoded)


def _gate_line_x(png: bytes, left: float, right: float) -> float:
    """Column of the dashed gate line in CSS pixels: the most black pixels between the axes' spines
    (the PNG has TunerFigure.SCALE pixels per CSS pixel, for HiDPI screens)."""
    import io

    from PIL import Image

    scale = gate_tuner.TunerFigure.SCALE
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    black = (rgb.sum(axis=2) < 100).sum(axis=0)
    columns = np.arange(black.size)[int(left * scale) + 3 : int(right * scale) - 3]
    return float(columns[np.argmax(black[columns])]) / scale


def _readout_gate(widget) -> float:
    text = widget.locator(".widget-html").first.inner_text()
    match = re.match(r"gate (\d+\.\d+):", text)
    assert match, f"readout {text!r} does not start with the gate"
    return float(match.group(1))


def _wait_for_gate(page, widget, gate: float, image_before: str | None) -> None:
    """Wait until the readout shows ``gate`` and the image has been replaced since ``image_before``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        src = widget.locator("img").get_attribute("src")
        if abs(_readout_gate(widget) - gate) < 5e-4 and src != image_before:
            return
        page.wait_for_timeout(100)
    pytest.fail(f"readout {_readout_gate(widget)} / image did not follow the slider to {gate}")


def _use_the_tuner(page, url: str, config, stage_dir, tuner) -> float:
    """Every step a user takes, with its assertions; returns how long the image took to catch up with
    ten quick arrow-key presses (seconds)."""
    log_file = stage_dir / f"{stage_dir.name}.log"
    low, high, step = tuner.slider_range()
    left, right = gate_tuner.TunerFigure(tuner).axes_span_px()
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=TIMEOUT_MS)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=TIMEOUT_MS)

    # Setup and tuner only: on a paused run the tuner needs no training cell.
    log_before = log_file.read_text()
    _run_cell(page, "papermill injects overrides after this cell")
    _run_cell(page, f'run_name = "{config.run_name}"')  # the cell papermill's parameterize added
    _run_cell(page, "stage2_view.open_stage(cfg)")
    _run_cell(page, "stage2_view.show_gate_tuner(cfg, stage_dir)")
    widget = page.locator(".widget-vbox").filter(has=page.locator("img")).filter(has_text="use this gate")
    widget.wait_for(timeout=TIMEOUT_MS)
    image, handle = widget.locator("img"), widget.locator(".noUi-handle")
    button = widget.get_by_role("button", name="use this gate")
    assert button.is_enabled() and "paused before phase L of iteration 1" in widget.inner_text()
    box = image.bounding_box()
    assert (box["width"], box["height"]) == (630, 324), "the histogram must keep its own size"
    button_box = button.bounding_box()
    assert button_box["y"] + button_box["height"] - box["y"] < 500, "histogram to button must fit on one screen"

    # The slider's track spans the histogram's x axis: its ends are where the axes' edges are drawn.
    image_x = box["x"]
    track = widget.locator(".noUi-base").bounding_box()
    track_px = (track["x"] - image_x, track["x"] + track["width"] - image_x)
    assert abs(track_px[0] - left) <= 2 and abs(track_px[1] - right) <= 2, (
        f"slider track spans {track_px[0]:.1f}-{track_px[1]:.1f} px, the axes {left:.1f}-{right:.1f} px"
    )
    # The slider sits on the very gate training would use (its grid is laid through it).
    assert _readout_gate(widget) == pytest.approx(tuner.gate, abs=5e-5)

    def handle_x() -> float:
        handle_box = handle.bounding_box()
        return handle_box["x"] + handle_box["width"] / 2 - image.bounding_box()["x"]

    def check_alignment(gate: float) -> None:
        # The dashed line in the shown image sits above the slider's handle.
        line_x = _gate_line_x(_image_png(image), left, right)
        expected_x = left + (gate - low) / (high - low) * (right - left)
        assert abs(line_x - expected_x) <= 2, f"gate line at {line_x} px, {gate} is at {expected_x:.1f} px"
        assert abs(handle_x() - line_x) <= 3, f"slider handle at {handle_x():.1f} px, gate line at {line_x} px"

    # End and Home: the handle at the axes' right and left edge.
    handle.focus()
    for key, gate, edge in (("End", high, right), ("Home", low, left)):
        src = image.get_attribute("src")
        page.keyboard.press(key)
        _wait_for_gate(page, widget, gate, src)
        assert abs(handle_x() - edge) <= 3, (
            f"{key}: slider handle at {handle_x():.1f} px, the axes end at {edge:.1f} px"
        )

    # A typed value in the slider's readout.
    typed = tuner.on_grid(float(np.median(tuner.per_sample_loss)))
    src = image.get_attribute("src")
    widget.locator(".widget-readout").click()
    page.keyboard.press("Control+A")
    page.keyboard.type(f"{typed:.4f}")
    page.keyboard.press("Enter")
    _wait_for_gate(page, widget, typed, src)
    check_alignment(typed)

    # Arrow keys: ten quick presses; the readout and the image catch up with the last one.
    handle.focus()
    src = image.get_attribute("src")
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    chosen = typed + 10 * step
    tic = time.monotonic()
    _wait_for_gate(page, widget, chosen, src)
    catch_up_s = time.monotonic() - tic
    check_alignment(chosen)
    page.wait_for_timeout(500)  # no late redraw moves the image away from the readout
    check_alignment(_readout_gate(widget))
    widget.screenshot(path=str(_screens_dir(stage_dir.parent / "browser") / "04_gate_tuner_paused_run.png"))
    assert log_file.read_text() == log_before, "tuning must not write into the run's training log"

    button.click()
    widget.get_by_text("will be used by phase L of iteration 1").wait_for(timeout=TIMEOUT_MS)
    assert not widget.inner_text().startswith("applied")
    overrides = json.loads((stage_dir / stage2.GATE_OVERRIDES).read_text())
    assert overrides == {"1": pytest.approx(chosen, abs=1e-9)}

    # Phase L trains with the chosen gate; the live curves are drawn in the training cell's output.
    _run_cell(page, "stage2_view.train(cfg, stage_dir, view_only)")
    state = stage2.read_state(stage_dir)
    assert state["status"] == "done" and state["iterations"][0]["gate"] == pytest.approx(chosen)
    gated = [r for r in state["history"] if r["phase"] == "L"]
    assert gated and all(r["gate"] == pytest.approx(chosen) for r in gated)
    train_cell = page.locator(".jp-Notebook .jp-CodeCell").filter(
        has_text="stage2_view.train(cfg, stage_dir, view_only)"
    )
    assert train_cell.locator(".jp-OutputArea-output img").count() == 1, "one live figure, updated in place"

    # On the finished run the tuner only explores: the button is disabled and says why.
    log_after_training = log_file.read_text()
    _run_cell(page, "stage2_view.show_gate_tuner(cfg, stage_dir)")
    finished = page.locator(".widget-vbox").filter(has_text="no phase L left")
    finished.wait_for(timeout=TIMEOUT_MS)
    assert finished.get_by_role("button", name="use this gate").is_disabled()
    assert log_file.read_text() == log_after_training
    return catch_up_s


@pytest.mark.slow
def test_gate_tuner_in_jupyterlab(paused_run, lab):
    config, stage_dir = paused_run
    url, _ = lab
    tuner, _ = gate_tuner.stage2_gate_tuner(stage_dir, config)
    problems: list[str] = []
    started = time.monotonic()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        try:
            catch_up_s = _use_the_tuner(page, url, config, stage_dir, tuner)
        except Exception:
            page.screenshot(path=str(stage_dir.parent / "browser" / "failure.png"))
            raise
        finally:
            browser.close()
    print(f"browser test: {time.monotonic() - started:.0f} s in the browser, image caught up in {catch_up_s:.2f} s")
    assert not problems, "\n".join(problems)


def _screens_dir(default: Path) -> Path:
    """Where screenshots go: ``$LGL_SCREENS_DIR`` (``docs/screens`` to refresh the committed ones), else ``default``."""
    folder = Path(os.environ.get("LGL_SCREENS_DIR") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
