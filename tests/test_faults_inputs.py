"""Odd inputs and resources bounded by the work (issue 21, parts 3-4): images in every colour mode (files written by
Pillow, imageio and OpenCV), flags that size memory, a video whose frame size changes, motion logs longer than the
input or of many rows, `init_from` a run still writing, linked checkpoint steps, and the scripts' argument errors.

In-process throughout (infer.py's and evaluate's `main`, the scripts' `main` loaded by path, the check functions);
no case runs the network: each is refused, or noted, before the model loads. Each asserts the exit code or the
exception, the one line (file or flag, value, what was expected) and the disk afterwards.
"""

import os
import re

import av
import cv2
import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import infer
from depthnet_jax.common import cli, folder_lock, images
from depthnet_jax.evaluation import command
from depthnet_jax.infer import frames, motion, options
from depthnet_jax.testing import config_files, disk
from depthnet_jax.train import checks as train_checks
from tfds_stillbox.render import checks as render_checks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _disk(*paths):
  """Each path's state: a folder's `disk.snapshot` and where its symbolic links point, a file's bytes, or
  'missing'."""
  state = {}
  for path in map(str, paths):
    if os.path.isdir(path):
      links = {os.path.join(d, n): os.readlink(os.path.join(d, n)) for d, dirs, names in os.walk(path)
               for n in dirs + names if os.path.islink(os.path.join(d, n))}
      state[path] = (disk.snapshot(path), links)
    elif os.path.isfile(path):
      with open(path, 'rb') as f:
        state[path] = f.read()
    else:
      state[path] = 'missing'
  return state


def _one_error(err):
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in err, err
  return lines[0]


def _infer(capsys, *args):
  code = infer.main([str(a) for a in args])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


# --- 1. colour modes: one decoder for every frame ---------------------------------------------------------------

# flat 16x16 blocks: JPEG's 2x2 chroma subsampling keeps their colours
RGB = np.array([[[200, 40, 90], [10, 220, 30]], [[0, 0, 0], [255, 255, 255]]], np.uint8).repeat(16, 0).repeat(16, 1)
GRAY = np.array([[0, 17], [128, 255]], np.uint8).repeat(8, 0).repeat(8, 1)


def _modes(folder):
  """(file, expected uint8 RGB, tolerance) for files written by PIL, imageio and OpenCV in their own modes."""
  folder.mkdir()
  g16 = np.array([[0, 1000], [32768, 65535]], np.uint16).repeat(8, 0).repeat(8, 1)
  c16 = np.stack([g16, g16[::-1], 65535 - g16], axis=-1)
  scaled = lambda v: ((v.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)   # noqa: E731
  gray3 = np.repeat(GRAY[..., None], 3, axis=-1)
  cases = []

  def add(name, write, expected, tolerance=0):
    write(str(folder / name))
    cases.append((folder / name, expected, tolerance))
  add('l.png', lambda p: Image.fromarray(GRAY).save(p), gray3)
  add('la.png', lambda p: Image.fromarray(np.dstack([GRAY, 255 - GRAY])).save(p), gray3)
  add('rgba.png', lambda p: iio.imwrite(p, np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])), RGB)
  add('p.png', lambda p: Image.fromarray(RGB).quantize(4).save(p), RGB)
  add('p.gif', lambda p: Image.fromarray(RGB).quantize(4).save(p), RGB)
  add('one_bit.png', lambda p: Image.fromarray(GRAY > 100).save(p), np.where(gray3 > 100, 255, 0).astype(np.uint8))
  add('cmyk.jpg', lambda p: Image.fromarray(RGB).convert('CMYK').save(p, quality=95), RGB, 6)
  add('ycbcr.jpg', lambda p: Image.fromarray(RGB).save(p, quality=95, subsampling=0), RGB, 6)   # JPEG's YCbCr
  add('gray16.png', lambda p: iio.imwrite(p, g16), np.repeat(scaled(g16)[..., None], 3, axis=-1))
  add('rgb16.png', lambda p: cv2.imwrite(p, c16[..., ::-1].copy()), scaled(c16))
  add('rgba16.png', lambda p: cv2.imwrite(p, np.dstack([c16[..., ::-1], g16])), scaled(c16))
  add('rgb16.tif', lambda p: cv2.imwrite(p, c16[..., ::-1].copy()), scaled(c16))
  # OpenCV's own files: BGR(A) order on disk, 16-bit gray as TIFF and as PGM (which Pillow opens as mode 'I')
  full_chroma = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
  add('cv_bgr.jpg', lambda p: cv2.imwrite(p, RGB[..., ::-1].copy(), full_chroma), RGB, 6)
  add('cv_gray.jpg', lambda p: cv2.imwrite(p, GRAY, [cv2.IMWRITE_JPEG_QUALITY, 95]), gray3, 3)
  add('cv_bgra.png', lambda p: cv2.imwrite(p, np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 9, np.uint8)])), RGB)
  add('cv_gray16.tif', lambda p: cv2.imwrite(p, g16), np.repeat(scaled(g16)[..., None], 3, axis=-1))
  add('cv_gray16.pgm', lambda p: cv2.imwrite(p, g16), np.repeat(scaled(g16)[..., None], 3, axis=-1))
  twelve = np.array([[0, 4095]], '>u2')   # a 12-bit PGM (maxval 4095): Pillow scales it to 16 bits
  add('gray12.pgm', lambda p: open(p, 'wb').write(b'P5\n2 1\n4095\n' + twelve.tobytes()),
      np.array([[[0] * 3, [255] * 3]], np.uint8))
  add('p_transparent.png', lambda p: Image.fromarray(RGB).quantize(4).save(p, transparency=0), RGB)
  return cases


def test_every_colour_mode_decodes_to_8_bit_rgb_of_the_right_colours(tmp_path):
  for path, expected, tolerance in _modes(tmp_path / 'modes'):
    image = frames.read_image(str(path))
    assert image.dtype == np.uint8 and image.shape == expected.shape, path
    difference = np.abs(image.astype(int) - expected).max()
    assert difference <= tolerance, (path.name, difference)
  # CMYK is converted, not its first three channels taken; 16 bits are scaled (1000 -> 4), not clipped (-> 255)
  cmyk = np.asarray(Image.open(tmp_path / 'modes' / 'cmyk.jpg'))
  assert np.abs(frames.read_image(str(tmp_path / 'modes' / 'cmyk.jpg')).astype(int) - cmyk[..., :3]).max() > 100
  assert frames.read_image(str(tmp_path / 'modes' / 'gray16.png'))[0, 8, 0] == 4


def test_a_mode_it_cannot_take_is_one_line_naming_the_file_and_mode(capsys, random_checkpoint, tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  for i in range(3):
    Image.fromarray(RGB).save(folder / f'f{i}.png')
  Image.fromarray(GRAY.astype(np.float32) / 255).save(folder / 'f3.tif')   # mode F
  Image.fromarray(GRAY.astype(np.int32) * 1000).save(folder / 'f4.tif')   # mode I
  for name, mode in (('f3.tif', 'F'), ('f4.tif', 'I')):
    with pytest.raises(images.ImageError, match=rf"{name}: colour mode '{mode}' \(TIFF\); expected an 8- or 16-bit"):
      images.read(str(folder / name))
  before = _disk(folder)
  code, out, err = _infer(capsys, '--checkpoint', random_checkpoint, '--input', folder, '--output', tmp_path / 'out',
                          '--extensions', 'png,tif', '--no_resize')
  assert code == 1 and out == ''
  assert _one_error(err) == (f"error: {folder / 'f3.tif'}: colour mode 'F' (TIFF); expected an 8- or 16-bit image "
                             'in RGB, grayscale, palette, CMYK or YCbCr (with or without alpha), or a 1-bit image')
  assert _disk(folder) == before and not (tmp_path / 'out').exists()


# --- 2. flags that size memory ------------------------------------------------------------------------------------

def _segment(path, n, w, h, start=0, container_format='mpegts'):
  with av.open(str(path), 'w', format=container_format) as container:
    stream = container.add_stream('libx264', rate=10)
    stream.width, stream.height, stream.pix_fmt = w, h, 'yuv420p'
    rng = np.random.default_rng(start)
    for _ in range(n):
      frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format='rgb24')
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  """'resized': a video (MPEG-TS, as cameras and streams concatenate them) of 4 frames at 32x32, then 3 at 48x32;
  'steady': an MP4 of 4 frames at 32x32 (its container records the count)."""
  folder = tmp_path_factory.mktemp('video')
  _segment(folder / 'a.ts', 4, 32, 32)
  _segment(folder / 'b.ts', 3, 48, 32, start=1)
  resized = folder / 'flight.ts'
  resized.write_bytes((folder / 'a.ts').read_bytes() + (folder / 'b.ts').read_bytes())
  _segment(folder / 'steady.mp4', 4, 32, 32, container_format='mp4')
  return {'resized': resized, 'steady': folder / 'steady.mp4'}


def test_a_batch_size_beyond_the_memory_is_one_line_before_the_model(capsys, random_checkpoint, videos, tmp_path):
  out = tmp_path / 'out'
  code, _, err = _infer(capsys, '--checkpoint', random_checkpoint, '--input', videos['steady'], '--output', out,
                        '--no_resize', '--batch_size', 10**9)
  assert code == 1
  line = _one_error(err)
  assert line.startswith('error: --batch_size=1000000000: expected at most ') and (
      'a pair at network input 32x32 (frames 32x32) takes ~287 kB besides 6.14 kB for the frames held back' in line
      and 'the machine has' in line), line
  assert not out.exists()
  # a folder's pairs bound it first: 3 frames hold at most 3 pairs, whatever --batch_size says
  assert options.check_batch_memory(10**9, 1, (512, 512), (512, 512), 3) == 10**9
  with pytest.raises(cli.UserError, match=r'--batch_size=1000000000: expected at most \d+ \(a pair at network input'):
    options.check_batch_memory(10**9, 1, (512, 512), (512, 512), None)


def test_evaluate_batch_size_is_clamped_to_the_pairs_and_bounded_by_the_memory():
  args = command.Args('ckpt', 'best', 'd', 'validation', None, None, 'original', 3, 10**9, None, None, False, '',
                      True)
  assert command.bounded_batch(args, {'scenes': 2, 'frames': 6, 'height': 32, 'width': 32}) == 6
  assert command.bounded_batch(args, {'scenes': 2, 'frames': 6, 'height': 32, 'width': 32}, devices=4) == 8
  with pytest.raises(cli.UserError, match=r'--batch_size=1000000000: expected at most \d+ \(a pair of 512x512 frames '
                                          r'takes ~83.9 MB: 9000000 would need ~755 TB, the machine has'):
    command.bounded_batch(args, {'scenes': 10**6, 'frames': 12, 'height': 512, 'width': 512})


def test_train_fields_that_size_memory_are_bounded():
  from configs import test as test_config
  config = test_config.get_config()
  train_checks.validate_config(config)
  cores = os.cpu_count()
  for field, value, message in (
      ('worker_count', 10**6, rf'--config.worker_count=1000000: expected an integer >= 0, at most {4 * cores} \(4 '
                              r'per core of this machine'),
      ('num_train_steps', 2**31, r'--config.num_train_steps=2147483648: expected -1 \(train num_epochs epochs\) or an '
                                 r'integer >= 1, at most 2147483647 \(the step counter is a 32-bit integer\)')):
    bad = test_config.get_config()
    bad[field] = value
    with pytest.raises(cli.UserError, match=message):
      train_checks.validate_config(bad)
  train_checks.check_data_sizes(config, pairs_per_epoch=60, height=32, width=32)
  config.batch_size = 10**7
  with pytest.raises(cli.UserError, match=r'--config.batch_size=10000000: expected at most \d+ \(a training pair at '
                                          r'512x512 takes ~268 MB: 10000000 would need ~2.68e\+03 TB'):
    train_checks.check_data_sizes(config, pairs_per_epoch=10**8, height=512, width=512)
  config.batch_size, config.num_train_steps, config.num_epochs = 4, -1, 10**9
  with pytest.raises(cli.UserError, match=r'--config.num_epochs=1000000000: expected at most 143165576 \(15 steps an '
                                          'epoch; the step counter is a 32-bit integer'):
    train_checks.check_data_sizes(config, pairs_per_epoch=60, height=32, width=32)


def test_renderer_counts_are_bounded_by_memory_and_disk(tmp_path):
  with pytest.raises(cli.UserError, match=r'--jobs=1000000: expected an integer from 0 to \d+ \(0: one per core'):
    render_checks.check_jobs('--jobs', 10**6, 10, (64, 64), 100)
  assert render_checks.check_jobs('--jobs', 4, 10, (64, 64), 2) == 4   # two scenes: two processes
  assert render_checks.check_scenes('--scenes', 100, 10, (64, 64), str(tmp_path / 'new' / 'tree')) == 100
  with pytest.raises(cli.UserError, match=r'--scenes=9000000: expected at most \d+ \(a scene of 10 frames at '
                                          r'4096x4096 writes at least 671 MB: 9000000 need ~6.04e\+03 TB, the file '
                                          f'system of {tmp_path} has'):
    render_checks.check_scenes('--scenes', 9 * 10**6, 10, (4096, 4096), str(tmp_path / 'new' / 'tree'))
  with pytest.raises(cli.UserError, match=r'--scenes=100000000: expected an integer from 1 to 10000000'):
    render_checks.check_scenes('--scenes', 10**8, 10, (64, 64), None)
  assert os.listdir(tmp_path) == []


# --- 3. infer.py's inputs: a frame size that changes, long motion logs -----------------------------------------------

def test_a_video_whose_frame_size_changes_is_refused_before_any_work(capsys, random_checkpoint, videos, tmp_path):
  resized = videos['resized']
  expected = (f"error: --input {resized}, frame 4: frame size 48x32 differs from frame 0's 32x32; expected every "
              'frame of a video to have one size (re-encode it at one size, e.g. ffmpeg -vf scale=W:H)')
  out = tmp_path / 'out'
  before = _disk(resized.parent)
  code, out_text, err = _infer(capsys, '--checkpoint', random_checkpoint, '--input', resized, '--output', out,
                               '--no_resize', '--output_raw')
  assert code == 1 and out_text == '' and _one_error(err) == expected   # found from the key frames
  assert not out.exists() and _disk(resized.parent) == before
  # the guard while decoding (a size change that were not at a key frame): the same line, at the same frame
  with pytest.raises(frames.FootageError) as raised:
    list(frames.video_frames(str(resized)))
  assert f'error: {raised.value}' == expected


def test_a_log_longer_than_the_input_is_a_note_stating_both_counts(capsys, random_checkpoint, tmp_path):
  folder = tmp_path / 'in'
  folder.mkdir()
  for i in range(4):
    Image.fromarray(np.roll(RGB, i, axis=1)).save(folder / f'frame_{i}.png')
  log = tmp_path / 'log.csv'
  log.write_text('frame,x,y,z\n' + ''.join(f'{i},0,0,{i / 10}\n' for i in range(10)))
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'frame_3_depth.png').write_bytes(b'mine')   # stops the run after the input is opened, before the model
  before = _disk(folder, out, log)
  code, _, err = _infer(capsys, '--checkpoint', random_checkpoint, '--input', folder, '--output', out, '--motion',
                        log, '--no_resize')
  assert code == 1
  assert f'note: --motion {log}: 10 rows for the 4 frames of --input {folder}; the rows of frames 4 and later are ' \
         'not used' in err.splitlines()
  assert 'frame_3_depth.png already exist(s)' in _one_error(err)
  assert _disk(folder, out, log) == before
  flight = motion.read_log(str(log), 4)   # of a folder's frames, only its rows are kept
  assert flight.frames == 4 and flight.rows == 10 and flight.displacement(0, 3) == pytest.approx(0.3)


def test_a_video_keeps_only_the_rows_of_the_frames_its_container_records(capsys, random_checkpoint, videos, tmp_path,
                                                                          monkeypatch):
  steady, log = videos['steady'], tmp_path / 'log.csv'
  log.write_text('time,vx,vy,vz\n' + ''.join(f'{i / 10},0,0,1\n' for i in range(10)))
  limits, read = [], motion.read_log
  monkeypatch.setattr(motion, 'read_log', lambda path, count=None: limits.append(count) or read(path, count))
  out = tmp_path / 'out'
  out.mkdir()
  (out / '000003_depth.png').write_bytes(b'mine')   # stops the run after the input is opened, before the model
  before = _disk(out, log)
  code, _, err = _infer(capsys, '--checkpoint', random_checkpoint, '--input', steady, '--output', out, '--motion',
                        log, '--no_resize')
  assert code == 1 and limits == [4]   # the MP4's recorded count, before the log is read
  assert f'note: --motion {log}: 10 rows for the 4 frames of --input {steady}; the rows of frames 4 and later ' \
         'are not used' in err.splitlines()
  assert '000003_depth.png already exist(s)' in _one_error(err)
  assert _disk(out, log) == before


def test_a_long_log_is_streamed_with_progress_keeping_the_rows_used(capsys, tmp_path, monkeypatch):
  rows = 200_000
  log = tmp_path / 'long.csv'
  with open(log, 'w') as f:
    f.write('time,vx,vy,vz\n')
    f.writelines(f'{i * 0.1:.1f},0,0,1\n' for i in range(rows))
  monkeypatch.setattr(motion, 'PROGRESS_BYTES', 2**20)   # shown from 1 MiB (16 MiB by default)
  used = motion.read_log(str(log), 300)
  whole = motion.read_log(str(log))
  err = capsys.readouterr().err.splitlines()
  size = -(-os.path.getsize(log) // 2**20)
  assert err and all(line.startswith('reading --motion long.csv ') for line in err), err
  assert err[-1].startswith(f'reading --motion long.csv {size}/{size} MiB')
  assert used.frames == 300 and used.steps.shape == (299, 3) and used.rows == rows
  assert whole.frames == rows and whole.displacement(0, 299) == pytest.approx(used.displacement(0, 299))
  log.write_text('time,vx,vy,vz\n0,0,0,1\n0.1,0,0,1\n0.1,0,0,1\n')
  with pytest.raises(motion.MotionError, match=r"line 4, column 'time': '0.1' is not after the previous row's 0.1"):
    motion.read_log(str(log))


# --- 4. train.py: init_from a run still writing, linked steps --------------------------------------------------------

def _fake_run(root, steps=(3, 6), best=6):
  """A workdir's layout as train.py leaves it (step folders with model_config/; best/ empty if `best` is None),
  enough for the path checks."""
  for step in steps:
    (root / 'checkpoints' / str(step) / 'model_config').mkdir(parents=True)
  (root / 'best').mkdir()
  if best is not None:
    (root / 'best' / str(best) / 'model_config').mkdir(parents=True)
  (root / 'config.json').write_text('{}')
  return root


def test_init_from_a_run_still_writing_names_the_step_taken(capsys, tmp_path):
  run = _fake_run(tmp_path / 'run')
  config = {'eval_only': False, 'init_from': str(run)}
  assert train_checks.check_paths(config, tmp_path / 'new').init_from == str(run)   # no run holds it
  assert capsys.readouterr().err == ''
  lock = folder_lock.acquire(run, '--workdir', beside=True)   # what a training run holds (this process: alive)
  try:
    paths = train_checks.check_paths(config, tmp_path / 'new')
  finally:
    lock.release()
  assert paths.init_from == str(run / 'best' / '6')
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"note: --config.init_from='{run}': initialised from step 6 of {run}, "
                                             f'a run still writing (pid {os.getpid()}, ')
  assert not (tmp_path / 'new').exists()


def test_a_linked_step_is_refused_naming_the_link(capsys, random_checkpoint, tmp_path):
  from tfds_stillbox.render import export
  tree = export.export(str(tmp_path / 'tree'), 32, 1, seed=3, num_frames=4)   # evaluate checks the data first
  run = _fake_run(tmp_path / 'run', best=None)
  os.symlink(random_checkpoint, run / 'best' / '7')
  before = _disk(run, random_checkpoint, tree)
  expected = f'{run / "best" / "7"}: a symbolic link (to {random_checkpoint}); expected the step folders train.py '
  code, _, err = _infer(capsys, '--checkpoint', run, '--input', tmp_path, '--output', tmp_path / 'out')
  assert code == 1 and expected in _one_error(err)
  code = command.main(['--checkpoint', str(run), '--stillbox_tree', tree, '--json', str(tmp_path / 'e.json')])
  assert code == 1 and expected in _one_error(capsys.readouterr().err)
  for config, workdir in (({'eval_only': False, 'init_from': str(run)}, tmp_path / 'new'),
                          ({'eval_only': False, 'init_from': ''}, run)):   # a warm start from it, a resume in it
    with pytest.raises(cli.UserError, match=re.escape(expected)):
      train_checks.check_paths(config, workdir)
  assert _disk(run, random_checkpoint, tree) == before
  assert sorted(os.listdir(tmp_path)) == ['run', 'tree']


# --- 5. the scripts' argument errors -----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def scripts():
  return {name: config_files.load_module(os.path.join(REPO, 'scripts', f'{name}.py'), f'_script_{name}')
          for name in ('reference', 'demo')}


def test_the_scripts_argument_errors_are_one_line_before_any_work(capsys, scripts, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)   # their default --out is relative
  foreign = tmp_path / 'mine'
  foreign.mkdir()
  (foreign / 'thesis.tex').write_text('mine')
  cases = [
      ('reference', ['--steps', str(10**8)], "error: --steps=100000000: expected an integer from 1 to 23000 "
                                             "(configs/reference64.py's num_train_steps: --steps stops its schedule "
                                             'earlier)'),
      ('reference', ['--smoke', '--steps', '7'], 'error: --steps=7: expected an integer from 1 to 6 '
                                                 "(configs/test.py's num_train_steps"),
      ('reference', ['--steps', '0'], 'error: --steps=0: expected an integer from 1 to 23000'),
      ('reference', ['--stpes', '5'], 'error: unrecognized arguments: --stpes 5 (--help lists the flags)'),
      ('reference', ['--resolution', '96'], 'error: argument --resolution: invalid choice: 96'),
      ('reference', ['--out', str(tmp_path / 'out'), '--workdir', str(foreign)],
       f'error: --workdir {foreign}: holds files that are not a depthnet-jax training run (thesis.tex)'),
      ('demo', ['--steps', str(10**7)], 'error: --steps=10000000: expected an integer from 1 to 100000 (a demo; '
                                        'train.py trains longer runs)'),
      ('demo', ['--steps', 'many'], "error: argument --steps: invalid int value: 'many' (--help lists the flags)"),
      ('demo', ['--out', str(tmp_path / 'out'), '--workdir', str(foreign)],
       f'error: --workdir {foreign}: holds files that are not a depthnet-jax training run (thesis.tex)'),
  ]
  before = _disk(tmp_path)
  for name, argv, expected in cases:
    code = scripts[name].main(argv)
    captured = capsys.readouterr()
    assert code == 1 and captured.out == '', (name, argv, captured)
    assert _one_error(captured.err).startswith(expected), (name, argv, captured.err)
    assert _disk(tmp_path) == before, (name, argv)
  assert scripts['reference'].schedule_steps(os.path.join(REPO, 'configs', 'reference64.py')) == 23000
