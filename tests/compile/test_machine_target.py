"""Machine targets: ``pcc compile --machine`` sizes the tiles, code generation and the program's memory; the
program records the machine (``.machine`` in the assembly, a MACHINE section in the ``.pbin``) and runs on it;
a model too large for main memory is refused before quantizing, naming the sizes and the option."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from pcc.backend import binary
from pcc.backend.assembler import assemble, assemble_file
from pcc.cli import main
from pcc.diagnostics import PccError
from pcc.drivers.compile import compile_model
from pcc.frontends import onnx as onnx_frontend
from pcc.isa import DEFAULT_CONFIG
from pcc.machine import check_fits, parse_machine
from pcc.passes.quantize import Quantize
from pcc.runtime.simulator import Simulator


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple:  # noqa: ANN001
    d = tmp_path_factory.mktemp("machine")
    torch.manual_seed(0)
    path = d / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"])  # fmt: skip
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    return path, d / "x.npy"


def test_parse_machine_forms(tmp_path) -> None:  # noqa: ANN001
    assert parse_machine(None) is DEFAULT_CONFIG and parse_machine("default") is DEFAULT_CONFIG
    cfg = parse_machine("dram=32M, a=2^20,w=4194304,c=256K")
    sizes = (cfg.dram_words, cfg.a_spad_words, cfg.w_spad_pents, cfg.c_spad_words)
    assert sizes == (1 << 25, 1 << 20, 1 << 22, 1 << 18)
    assert cfg.mac_rows == DEFAULT_CONFIG.mac_rows  # only the sizes change
    assert parse_machine("large").dram_words == 1 << 27
    (tmp_path / "m.json").write_text(json.dumps({"dram_words": 1 << 24}))
    assert parse_machine(str(tmp_path / "m.json")).dram_words == 1 << 24
    (tmp_path / "bad.json").write_text('{"dram_words" 1}')
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "d.json").mkdir()
    for bad, says in [("dram=0", "out of range"), ("ram=1M", "unknown machine size"), ("dram=lots", "not a size"),
                      ("dram", "expected KEY=SIZE"), ("dram=1M,mem=2M", "given twice"),
                      (str(tmp_path / "none.json"), "no such file"), (str(tmp_path / "d.json"), "is a directory"),
                      (str(tmp_path / "bad.json"), r"bad\.json:1:15: .*invalid JSON"),
                      (str(tmp_path / "list.json"), "a machine description is a JSON object")]:  # fmt: skip
        with pytest.raises(PccError, match=says):
            parse_machine(bad)


def test_program_records_its_machine_and_runs_on_it(model, tmp_path) -> None:  # noqa: ANN001
    path, x = model
    ref_out, big_out = tmp_path / "ref.npz", tmp_path / "big.npz"
    compile_model(path, output=tmp_path / "ref.pasm")
    compile_model(path, output=tmp_path / "big.pasm", machine="dram=16M,a=4K,w=2K,c=1K")
    text = (tmp_path / "big.pasm").read_text()
    assert ".machine dram_words=16777216, a_spad_words=4096, w_spad_pents=2048, c_spad_words=1024" in text
    assert ".machine" not in (tmp_path / "ref.pasm").read_text()  # the default machine is not written
    prog = assemble_file(tmp_path / "big.pasm")
    assert prog.machine == {"dram_words": 1 << 24, "a_spad_words": 4096, "w_spad_pents": 2048, "c_spad_words": 1024}
    sim = Simulator(prog)
    assert sim.mem.size == 1 << 24 and sim.spad_a.size == 4096 and sim.spad_w.size == 2048
    # the smaller scratchpads give more, smaller tiles; the outputs are the same integers
    assert len(prog.instructions) > len(assemble_file(tmp_path / "ref.pasm").instructions)
    pbin = tmp_path / "big.pbin"
    binary.write(prog, pbin)
    assert binary.read(pbin).machine == prog.machine
    assert binary.read(pbin).code_words().tolist() == prog.code_words().tolist()
    for src, out in [(tmp_path / "ref.pasm", ref_out), (pbin, big_out)]:
        assert main(["run", str(src), "-i", f"x={x}", "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(ref_out)["y"], np.load(big_out)["y"])
    # a default-machine program is byte-identical to one written before targets existed: no MACHINE section
    ref = assemble_file(tmp_path / "ref.pasm")
    assert ref.machine == {} and binary.MACHINE not in {e[0] for e in _sections(binary.to_bytes(ref))}


def _sections(data: bytes) -> list[tuple]:
    n = binary.HEADER.unpack_from(data, 0)[3]
    return [binary.ENTRY.unpack_from(data, binary.HEADER.size + binary.ENTRY.size * i) for i in range(n)]


def test_too_small_machine_is_refused_before_quantizing(model, monkeypatch, capsys) -> None:  # noqa: ANN001
    path, _ = model

    def never(self, module):  # noqa: ANN001, ANN202
        raise AssertionError("quantize ran")

    monkeypatch.setattr(Quantize, "run", never)
    with pytest.raises(PccError) as e:
        compile_model(path, output=path.with_suffix(".pasm"), machine="dram=1000")
    msg = e.value.message
    # conv 3*8*9 = 216 and fc 512*10 = 5120 weights: 336 words at 16 pents a word; the largest layer's
    # activations: the flatten/fc input 512 + ... ; the machine: 1000 words
    assert "needs at least" in msg and "weights 336 words" in msg and "the machine has 1,000 words" in msg
    assert any("--machine" in n for n in e.value.notes)
    assert main(["compile", str(path), "-o", str(path.with_suffix(".pasm")), "--machine", "dram=1000"]) == 1
    err = capsys.readouterr().err
    assert "cannot fit the machine's main memory" in err and "--machine" in err and "Traceback" not in err


def test_exact_check_at_code_generation_names_the_option(model, tmp_path) -> None:  # noqa: ANN001
    path, _ = model
    compile_model(path, output=tmp_path / "ref.pasm")
    header = (tmp_path / "ref.pasm").read_text().splitlines()[1]  # "; activation arena: ...; parameters: words B..E"
    end = int(re.search(r"parameters: words \d+\.\.(\d+)", header).group(1))  # the program needs end + 1 words
    module = onnx_frontend.load(path)
    check_fits(module, parse_machine(f"dram={end}"))  # the lower bound passes...
    with pytest.raises(PccError, match=rf"needs {end + 1} words of main memory") as e:  # ...the exact size does not
        compile_model(path, output=tmp_path / "n.pasm", machine=f"dram={end}")
    assert any("--machine" in n for n in e.value.notes)


def test_machine_directive_errors() -> None:
    ok = assemble(".machine dram_words=4096\n.text\nHALT\n")
    assert ok.machine == {"dram_words": 4096} and ok.config.dram_words == 4096
    for src, says in [(".machine\n", "expected"), (".machine ram=4\n", "unknown machine size"),
                      (".machine dram_words=0\n", "out of range"),
                      (".text\nHALT\n.machine dram_words=8\n", "before any"),
                      (".machine dram_words=8, dram_words=9\n", "duplicate")]:  # fmt: skip
        with pytest.raises(PccError, match=says):
            assemble(src)
    with pytest.raises(PccError, match="main memory"):  # data past the target's memory
        assemble(".machine dram_words=16\n.data\n.zero 17\n")


def test_corrupt_machine_section_is_one_clear_error() -> None:
    data = bytearray(binary.to_bytes(assemble(".machine dram_words=4096\n.text\nHALT\n")))
    assert binary.from_bytes(bytes(data)).machine == {"dram_words": 4096}
    for at, value, says in [(-9, 7, "unknown or repeated size"), (-1, 0x40, "out of range")]:
        bad = bytearray(data)
        bad[at] = value  # the record is the last 9 bytes: index u8, value u64 little-endian
        with pytest.raises(PccError, match=f"corrupt .pbin: .*{says}"):
            binary.from_bytes(bytes(bad))
