"""``pcc check``: run one input through every level of the toolchain and show, layer by layer, where accuracy
is lost and whether the simulator computes exactly what the compiler meant.

On the same input(s) it runs

1. onnxruntime on the float model (``.onnx`` models only);
2. the float reference interpreter (:mod:`pcc.interpreter`) on the float graph after the default pipeline's float
   passes (``canonicalize``, ``fold-batchnorm``: rewrites that keep the float meaning, so every remaining error
   is quantization's);
3. the ``pent`` reference (:mod:`pcc.pent_reference`) on the graph the default pipeline (with the given
   calibration, ``act_pents``, ``per_tensor``) produced, the integer meaning of the program;
4. the simulator on the generated program.

Per layer (one row per op of the program, named by its model node; an op that absorbed a following ReLU or
residual add lists those nodes too) it reports the error of the ``pent`` reference against the float graph
(its integers times the value's scale: SQNR in dB, max absolute error), the SQNR *drop* across the layer (its
inputs' SQNR minus its own: where accuracy is lost), and whether the simulator's buffer equals the
reference's integers bit for bit.  Then the same for the final outputs, with the simulator against onnxruntime
and top-1 agreement for classifier outputs (shape ``[N, C]``).

How the layers are matched: the pent IR carries every value's scale (the ``scale`` attribute of the op that
produces it) and names each pent value after the float value it stands for (``x``, or ``x.q`` where the float
name stays with a program output); an op that ``fuse`` merged with its ReLU/Clip or residual add computes the
last op's value and carries its name and scale.  So each program op is matched by name to a value of the float
graph, and its integers times its IR scale are compared with that value.  The simulator's per-layer buffers come from
the code generator's layout: each op is one straight-line run of instructions introduced by a ``; @layer``
comment, writing its result at the op's planned arena address (channels last for 4-D tensors).  The simulator
is stopped at the end of each layer's instructions (with its exact step limit) and the buffer is read there,
before a later layer can reuse the memory.  A program that is not straight-line, or whose layers cannot be
matched to ``; @layer`` comments, is compared on its final outputs only, and the report says so.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import typer

from pcc.diagnostics import PccError, atomic_write, refuse_overwrite
from pcc.drivers.check_report import CheckReport, ErrorStats, LayerRow, OutputRow
from pcc.drivers.compile import quantize_flags
from pcc.ir import Module, Operation, Value
from pcc.runtime.simulator import DEFAULT_MAX_STEPS

__all__ = ["CheckReport", "LayerRow", "OutputRow", "check_model", "compile_traced", "Traced"]


# ----------------------------------------------------------------------------------------------- compiling with a trace


@dataclass
class Traced:
    """A compiled model with what ``check`` needs to relate the program to the float graph."""

    module: Module  # the final pent module (scheduled, planned, tiled)
    float_values: list[dict[str, np.ndarray]]  # per sample: float value name -> array (float graph after float passes)
    float_outputs: list[list[np.ndarray]]  # per sample: the float graph's outputs
    # id(final value) -> (float value name, nodes, how the float value reads in the final value's order)
    counterpart: dict[int, tuple[str, list[str], Callable[[np.ndarray], np.ndarray] | None]]
    compiled: Any  # pcc.backend.codegen.Compiled
    program: Any  # pcc.backend.program.Program
    quantize: Any  # the pipeline's Quantize pass (its options)
    float_module: Module | None = None  # a copy of the float graph (after the float passes), for the ablation


def _node(op: Operation | None) -> str | None:
    return op.loc.node if op is not None and op.loc is not None and op.loc.node else None


def _relayout(final: Operation) -> Callable[[np.ndarray], np.ndarray] | None:
    """How the float value of ``final`` reads in ``final``'s element order where a pass reordered it: a reshape
    that ``fold-flatten`` gave a ``perm`` flattens ``transpose(x, perm)`` instead of ``x``. None where the orders
    agree."""
    from pcc.dialects import pent

    if not isinstance(final, pent.Reshape) or final.attr("perm") is None:
        return None
    in_shape, perm, shape = final.operands[0].type.shape, final.attr("perm"), final.attr("shape")
    return lambda v: np.asarray(v).reshape(in_shape).transpose(perm).reshape(shape)


def _fused_nodes(first: str | None, name: str, producers: Mapping[str, tuple[str | None, list[str]]]) -> list[str]:
    """The model nodes a program op stands for: its own (``first``) and, where it absorbed the ops after it (a
    ReLU, a residual add), those up to the float op producing the value ``name``.  ``producers``: per float
    value name, its op's node and the names of the op's activation operands."""
    chain: list[str] = []
    cur = producers.get(name)
    for _ in range(4):  # op, add, activation: a few steps at most
        if cur is None or cur[0] is None or cur[0] == first:
            break
        chain.insert(0, cur[0])
        ins = [producers[n] for n in cur[1] if n in producers]
        cur = next((p for p in ins if p[0] == first), ins[0] if ins else None)
    return ([first] if first else []) + chain


def compile_traced(
    module: Module,
    samples: Sequence[Mapping[str, np.ndarray]],
    *,
    workdir: str | os.PathLike[str] | None = None,
    **quantize_options: Any,
) -> Traced:
    """Compile ``module`` (an ``nn`` module, changed in place) with the default pipeline (``quantize_options``:
    the quantize pass's fields by name), keeping the float graph's values on ``samples``.

    The float graph is the module after the pipeline's float passes (:data:`~pcc.passes.pipeline.FLOAT_PASSES`,
    rewrites that keep the float meaning); the rest of the pipeline then runs as ``pcc compile`` runs it.  Each
    pent value carries its scale in the IR and the name of the float value it stands for (``x`` or ``x.q``)."""
    from pcc import interpreter
    from pcc.backend.assembler import assemble_file
    from pcc.backend.codegen import generate, write_program
    from pcc.pass_manager import PassManager, parse_pipeline
    from pcc.passes.pipeline import FLOAT_PASSES, default_passes
    from pcc.passes.quantize import Quantize

    if module.main.body and all(op.name.startswith("pent.") for op in module.main.body):
        raise PccError(
            "pcc check needs a float model (.onnx, .json, .pt2 or an nn .pir); this one is already quantized"
        )
    passes = default_passes(**quantize_options)
    n_float = len(parse_pipeline(FLOAT_PASSES))
    PassManager(passes[:n_float]).run(module)

    from pcc.drivers.sensitivity import float_copy

    float_module = float_copy(module)
    float_graph = module.main
    named = {v.name: v.type.size for op in float_graph.body for v in op.results if v.name}
    named.update({a.name: a.type.size for a in float_graph.args if a.name})
    producers = {
        r.name: (_node(op), [v.name for v in op.operands if not v.is_weight and v.name])
        for op in float_graph.body
        for r in op.results
        if r.name
    }
    float_values: list[dict[str, np.ndarray]] = []
    float_outputs: list[list[np.ndarray]] = []
    for s in samples:
        vals = interpreter.run(module, dict(s), return_all=True)
        float_values.append(vals)
        float_outputs.append([np.asarray(vals[v.name or ""]) for v in float_graph.outputs])

    PassManager(passes[n_float:]).run(module)
    g = module.main
    counterpart: dict[int, tuple[str, list[str], Callable[[np.ndarray], np.ndarray] | None]] = {}
    for op in g.body:
        if not op.results or not op.results[0].type.is_pent or op.attributes.get("scale") is None:
            continue
        name = op.results[0].name or ""
        if name not in named and name.endswith(".q"):
            name = name[:-2]
        if named.get(name) != op.results[0].type.size:
            continue
        counterpart[id(op.results[0])] = (name, _fused_nodes(_node(op), name, producers), _relayout(op))

    compiled = generate(module)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / f"{module.name or 'model'}.pasm"
        write_program(compiled, path)
        program = assemble_file(path)
    q = next(p for p in passes if isinstance(p, Quantize))
    return Traced(module, float_values, float_outputs, counterpart, compiled, program, q, float_module)


# ----------------------------------------------------------------------------------------------- inputs


def split_samples(module: Module, inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Check the user's arrays against the model's arguments and split a batch into samples.

    An array may have exactly the argument's shape or, where the argument's first axis is 1, ``B`` samples on
    that axis; arrays with batch 1 are shared by every sample.  Raises PccError for a missing or unknown name,
    a non-real dtype, NaN or infinity, or a wrong shape."""
    g = module.main
    names = [a.name or "" for a in g.args]
    unknown = [k for k in inputs if k not in names]
    if unknown:
        raise PccError(f"the model has no input named '{unknown[0]}' (its inputs: {', '.join(names) or 'none'})")
    missing = [n for n in names if n not in inputs]
    if missing:
        raise PccError(
            f"missing input '{missing[0]}': give --input {missing[0]}=FILE.npy (the model's inputs: {', '.join(names)})"
        )
    batch: dict[str, int] = {}
    arrays: dict[str, np.ndarray] = {}
    for a in g.args:
        name = a.name or ""
        x = np.asarray(inputs[name])
        if x.dtype.kind not in "fiu":
            raise PccError(f"input '{name}' has dtype {x.dtype}; expected a real number array")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            bad = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
            raise PccError(f"input '{name}' contains NaN or Inf (first at flat index {bad})")
        want = a.type.shape
        if tuple(x.shape) == want:
            batch[name] = 1
        elif want and want[0] == 1 and x.ndim == len(want) and tuple(x.shape[1:]) == want[1:] and x.shape[0] >= 1:
            batch[name] = x.shape[0]
        else:
            hint = f" (or ({', '.join(['B', *map(str, want[1:])])}) for B samples)" if want and want[0] == 1 else ""
            raise PccError(f"input '{name}' has shape {tuple(x.shape)}; the model expects {tuple(want)}{hint}")
        arrays[name] = x.astype(a.type.np_dtype, copy=False)
    sizes = {b for b in batch.values() if b != 1}
    if len(sizes) > 1:
        raise PccError(f"the inputs have different batch sizes ({', '.join(f'{k}: {v}' for k, v in batch.items())})")
    n = sizes.pop() if sizes else 1
    return [{k: (x[i : i + 1] if batch[k] > 1 else x) for k, x in arrays.items()} for i in range(n)]


# ----------------------------------------------------------------------------------------------- the simulator


def layer_ends(program: Any, n_layers: int) -> list[int] | str:
    """Per layer of the generated code, the number of instructions executed when it is done (straight-line code),
    or why the program cannot be stopped layer by layer."""
    from pcc.isa import Op

    control = {Op.BEQ, Op.BNE, Op.BLT, Op.BGT, Op.JUMP, Op.CALL, Op.RET}
    ins = program.instructions
    if any(i.op in control for i in ins):
        return "the program has branches, so a layer's end is not a fixed instruction count"
    if not program.source or any(i.line is None for i in ins):
        return "the program has no assembly source lines to find its layers by"
    marks = [k for k, line in enumerate(program.source.splitlines(), 1) if line.startswith("; @layer ")]
    if len(marks) != n_layers:
        return f"the assembly has {len(marks)} '; @layer' comments for {n_layers} ops"
    lines = [i.line for i in ins]
    if lines != sorted(lines):
        return "the instructions are not in source order"
    import bisect

    return [bisect.bisect_left(lines, m) for m in marks[1:]] + [len(ins)]


def _read_buffer(sim: Any, v: Value, addr: int) -> np.ndarray:
    from pcc.backend.codegen import memory_order

    shape = v.type.shape
    pitch = v.owner.attributes.get("pitch") if v.owner is not None else None
    if pitch is not None and len(shape) == 4 and pitch != shape[1]:  # a slice of a concat's buffer (plan-memory)
        n, c, h, w = shape
        words = np.pad(sim.read_memory(addr, (n * h * w - 1) * pitch + c), (0, pitch - c))
        return words.reshape(n, h, w, pitch)[..., :c].transpose(0, 3, 1, 2)
    order = memory_order(shape)
    mem_shape = shape if order is None else tuple(shape[i] for i in order)
    words = sim.read_memory(addr, v.type.size).reshape(mem_shape)
    return words if order is None else words.transpose(np.argsort(order))


def _run_stepped(sim: Any, ends: list[int], on_layer: Any, max_steps: int) -> None:
    """Run the reset simulator to HALT, calling ``on_layer(k)`` once layer ``k``'s instructions have executed
    (``ends[k]`` instructions in all): the step limit stops the machine exactly there, and the next ``run``
    continues from that instruction."""
    last = len(ends) - 1
    for k, end in enumerate(ends):
        if k == last:
            sim.run(max_steps)
        elif end > sim.steps:
            limit = min(end, max_steps)
            try:
                sim.run(limit)
            except PccError as exc:
                if limit < end or sim.steps != end or not exc.message.startswith("step limit"):
                    raise
        on_layer(k)
    if not ends:
        sim.run(max_steps)


# ----------------------------------------------------------------------------------------------- onnxruntime


def _onnxruntime(
    path: Path, module: Module, samples: list[dict[str, np.ndarray]]
) -> tuple[list[list[np.ndarray]] | None, str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return None, "not installed (pip install onnxruntime)"
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ins = sess.get_inputs()
        args = [a.name or "" for a in module.main.args]
        names = {i.name for i in ins}
        if set(args) <= names:
            feed_names = args
        elif len(ins) == len(args):
            feed_names = [i.name for i in ins]
        else:
            return None, f"its inputs ({', '.join(sorted(names))}) do not match the imported model's"
        results = []
        for s in samples:
            feed = {fn: s[a].astype(np.float32) for fn, a in zip(feed_names, args, strict=True)}
            results.append([np.asarray(o) for o in sess.run(None, feed)])
    except Exception as exc:  # onnxruntime raises many kinds of errors: report it and go on without it
        return None, f"could not run the model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    n_out = len(module.main.outputs)
    if any(len(r) != n_out for r in results):
        return None, f"it returned {len(results[0])} outputs, the imported model has {n_out}"
    return results, "ran"


# ----------------------------------------------------------------------------------------------- check


def _op_label(op: Operation) -> str:
    from pcc.dialects import pent

    base = op.name.removeprefix("pent.")
    if isinstance(op, pent.REQUANT_OPS) and len(op.operands) > 5:
        base += "+add"
    act = pent.act_of(op)
    if act != "none":
        base += "+" + act
    return base


def check_model(
    model: str | os.PathLike[str],
    inputs: Mapping[str, np.ndarray],
    *,
    onnxruntime: bool = True,
    max_steps: int | None = None,
    module: Module | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    ablation: bool = True,
    **quantize_options: Any,
) -> CheckReport:
    """Compile ``model`` with the default pipeline and compare every level on ``inputs`` (arrays by input name;
    see the module docs).  ``quantize_options``: the quantize pass's fields by name (``calibration``,
    ``act_pents``, ``per_tensor``, ...).  ``ablation``: also quantize each layer alone (the rest float) and rank
    the layers by the output error each causes (:mod:`pcc.drivers.sensitivity`); the report's worst layer is
    the first of that ranking.  ``module``: the model already loaded with
    :func:`pcc.frontends.load_model` (it is compiled in place); ``input_shapes`` fixes the model's dynamic
    input dimensions, as for compile."""
    from pcc import pent_reference
    from pcc.backend.codegen import layer_name
    from pcc.frontends import load_model
    from pcc.runtime import boundary
    from pcc.runtime.simulator import DEFAULT_MAX_STEPS, Simulator

    max_steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    path = Path(model)
    if module is None:
        if not path.exists():
            raise PccError(f"{path}: no such file")
        module = load_model(path, input_shapes)
    samples = split_samples(module, inputs)
    tr = compile_traced(module, samples, **quantize_options)
    m, g, program = tr.module, tr.module.main, tr.program
    quants, deqs = pent_reference.program_io(m)
    layer_ops = [op for op in g.body if op.name not in ("pent.quantize", "pent.dequantize")]
    ends = layer_ends(program, len(layer_ops))
    notes: list[str] = []
    per_layer = not isinstance(ends, str)
    if isinstance(ends, str):
        notes.append(f"the simulator was compared on the final outputs only: {ends}")

    # one row per program input, then one per layer in program order; value_ops[i] produced row i's value
    rows: list[LayerRow] = []
    value_ops: list[Operation] = []
    row_of: dict[int, int] = {}
    for a, qop in zip(g.args, quants, strict=True):
        r = qop.results[0]
        row_of[id(r)] = len(rows)
        name = a.name or "input"
        rows.append(
            LayerRow(len(rows), name, [name], "input", r.type.shape, r.type.pents or 0, float(qop.attr("scale")))
        )
        value_ops.append(qop)
    for op in layer_ops:
        r = op.results[0]
        cp = tr.counterpart.get(id(r))
        nodes = cp[1] if cp else ([_node(op)] if _node(op) else [])
        ins = sorted({row_of[id(v)] for v in op.operands if not v.is_weight and id(v) in row_of})
        row_of[id(r)] = len(rows)
        scale = float(op.attr("scale")) if cp else None
        rows.append(LayerRow(len(rows), layer_name(op), nodes, _op_label(op), r.type.shape, r.type.pents or 0, scale))
        rows[-1].inputs = ins
        value_ops.append(op)
    unmatched = [rw.layer for rw, op in zip(rows, value_ops, strict=True) if rw.scale is None]
    if unmatched:
        notes.append(f"no float counterpart found for: {', '.join(unmatched[:8])} (no SQNR for these rows)")

    errs = [ErrorStats() for _ in rows]
    mism = [0] * len(rows)
    compared = [False] * len(rows)
    out_err = [ErrorStats() for _ in deqs]
    out_mism = [0] * len(deqs)
    sim_outs: list[list[np.ndarray]] = []
    sim = Simulator(program)
    for si, sample in enumerate(samples):
        ints: dict[int, np.ndarray] = {}

        def keep(op: Operation, results: list[np.ndarray], ints: dict[int, np.ndarray] = ints) -> None:
            for r, x in zip(op.results, results, strict=True):
                ints[id(r)] = x

        pent_reference.run(m, dict(sample), observe=keep)
        # the pent reference against the float graph
        fvals = tr.float_values[si]
        for i, (rw, op) in enumerate(zip(rows, value_ops, strict=True)):
            if rw.scale is None:
                continue
            q = ints[id(op.results[0])].astype(np.float64) * rw.scale
            if rw.is_input:
                errs[i].add(sample[g.args[i].name or ""], q)
            else:
                fname, _, relayout = tr.counterpart[id(op.results[0])]
                if fname in fvals:
                    errs[i].add(fvals[fname] if relayout is None else relayout(fvals[fname]), q)
        # the simulator, on the float input as a user gives it (quantized at the program boundary)
        feed = {d.name: sample[a.name or ""] for d, a in zip(program.inputs, g.args, strict=True)}
        (words,) = boundary.prepare_inputs(program, feed)
        sim.reset()
        for decl, w in words:
            sim.write_memory(decl.addr, w)

        def compare(i: int, ints: dict[int, np.ndarray] = ints) -> None:
            v = value_ops[i].results[0]
            addr = value_ops[i].attributes.get("addr")
            if addr is None:
                return
            got = _read_buffer(sim, v, int(addr))
            mism[i] += int(np.count_nonzero(got != ints[id(v)]))
            compared[i] = True

        if per_layer:
            assert not isinstance(ends, str)
            for i in range(len(quants)):
                compare(i)
            _run_stepped(sim, ends, lambda k: compare(len(quants) + k), max_steps)
        else:
            sim.run(max_steps)
        got = [boundary.read_output(sim, d, quantized=True) for d in program.outputs]
        sim_outs.append([boundary.dequantize(q, d) for q, d in zip(got, program.outputs, strict=True)])
        for j, d in enumerate(deqs):
            want = ints[id(d.operands[0])]
            out_mism[j] += int(np.count_nonzero(got[j] != want))
            out_err[j].add(tr.float_outputs[si][j], want.astype(np.float64) * float(d.attr("scale")))

    for i, rw in enumerate(rows):
        if rw.scale is not None and errs[i].count:
            rw.sqnr_db, rw.max_abs_err, rw.max_abs_ref = errs[i].sqnr_db, errs[i].max_err, errs[i].max_ref
        if compared[i]:
            rw.sim_exact, rw.mismatches = mism[i] == 0, mism[i]
    for rw in rows:
        ins_db = [rows[j].sqnr_db for j in rw.inputs if rows[j].sqnr_db is not None]
        if rw.sqnr_db is not None and ins_db and not rw.is_input:
            worst_in = min(ins_db)
            both_inf = math.isinf(worst_in) and math.isinf(rw.sqnr_db)
            rw.drop_db = 0.0 if both_inf else worst_in - rw.sqnr_db

    ort_out, ort_status = None, "not an ONNX model"
    if path.suffix.lower() == ".onnx":
        ort_out, ort_status = _onnxruntime(path, m, samples) if onnxruntime else (None, "not run (disabled)")
    outputs = [
        _output_row(j, g.outputs[j], d, decl, out_err[j], out_mism[j], sim_outs, tr.float_outputs, ort_out)
        for j, (d, decl) in enumerate(zip(deqs, program.outputs, strict=True))
    ]
    if ablation and tr.float_module is not None:
        from pcc.drivers.sensitivity import ablate

        alone = ablate(tr, tr.float_module)
        for rw, op in zip(rows, value_ops, strict=True):
            a = alone.get(id(op))
            if a is not None and not rw.is_input:
                rw.alone_db, rw.alone_rank = a.sqnr_db, a.rank
    q = tr.quantize
    return CheckReport(
        model=str(model),
        samples=len(samples),
        calibration=q.calibration or None,
        act_pents=q.act_pents,
        per_tensor=q.per_tensor,
        layers=rows,
        outputs=outputs,
        per_layer_sim=per_layer,
        onnxruntime=ort_status,
        notes=notes,
    )


def _output_row(
    j: int,
    out: Value,
    deq: Operation,
    decl: Any,
    err: ErrorStats,
    mismatches: int,
    sim_outs: list[list[np.ndarray]],
    float_outs: list[list[np.ndarray]],
    ort_outs: list[list[np.ndarray]] | None,
) -> OutputRow:
    v = deq.operands[0]
    row = OutputRow(
        out.name or decl.name,
        tuple(out.type.shape),
        v.type.pents or 0,
        float(deq.attr("scale")),
        err.sqnr_db,
        err.max_err,
        err.max_ref,
        mismatches == 0,
        mismatches,
    )
    refs = [f[j] for f in float_outs]
    against = "float reference"
    if ort_outs is not None:
        eo, ef = ErrorStats(), ErrorStats()
        refs = []
        for si, o in enumerate(ort_outs):
            ref = np.asarray(o[j], dtype=np.float64).reshape(sim_outs[si][j].shape)
            eo.add(ref, sim_outs[si][j])
            ef.add(ref, float_outs[si][j])
            refs.append(ref)
        row.ort_sqnr_db, row.ort_max_abs_err, row.float_vs_ort_max_abs_err = eo.sqnr_db, eo.max_err, ef.max_err
        against = "onnxruntime"
    if len(row.shape) == 2 and row.shape[1] >= 2:  # a classifier: [N, classes]
        agree = sum(
            int(np.sum(np.argmax(s[j], axis=1) == np.argmax(r, axis=1))) for s, r in zip(sim_outs, refs, strict=True)
        )
        row.top1_agree, row.top1_rows, row.top1_against = agree, row.shape[0] * len(sim_outs), against
    return row


# ----------------------------------------------------------------------------------------------- the command


def check_command(
    model: Path,
    inputs: Sequence[str],
    *,
    json_path: Path | None = None,
    max_steps: int | None = None,
    color: bool | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    sensitivity: bool = False,
    suggest_db: float | None = None,
    **quantize_options: Any,
) -> int:
    """``pcc check``: print the report (and write it as JSON); returns the exit status (1 when the simulator
    and the pent reference disagree).  ``sensitivity``: also print the layers ranked by the ablation;
    ``suggest_db``: propose overrides that bring the output SQNR to this many dB (:mod:`.sensitivity`)."""
    from pcc.drivers.compile import _warnings_as_diagnostics
    from pcc.frontends import load_model
    from pcc.runtime.cli import parse_inputs

    if not model.exists():
        raise PccError(f"{model}: no such file")
    calibration = quantize_options.get("calibration")
    if calibration is not None and not Path(calibration).exists():
        raise PccError(f"calibration file {calibration}: no such file")
    refuse_overwrite(json_path, model, calibration, *(spec.partition("=")[2] or spec for spec in inputs))
    with _warnings_as_diagnostics():
        module = load_model(model, input_shapes)
        names = [a.name or "" for a in module.main.args]
        if not inputs:
            raise PccError(
                f"give the input to check with --input NAME=FILE.npy (the model's inputs: {', '.join(names)})"
            )
        arrays = parse_inputs(list(inputs), names)
        report = check_model(model, arrays, max_steps=max_steps, module=module, **quantize_options)
    sys.stdout.write(report.table(color=sys.stdout.isatty() if color is None else color))
    if sensitivity:
        from pcc.drivers.sensitivity import LayerSensitivity, ranking_table

        rows = [
            LayerSensitivity(r.layer, r.layer, r.op, r.alone_db, 0.0, None, r.alone_rank)
            for r in report.layers
            if r.alone_rank is not None and r.alone_db is not None
        ]
        total = min((o.sqnr_db for o in report.outputs), default=None)
        sys.stdout.write("\n" + ranking_table(rows, total))
    doc = report.to_dict()
    if suggest_db is not None:
        from pcc.drivers.sensitivity import suggest

        with _warnings_as_diagnostics():
            sug = suggest(
                lambda: load_model(model, input_shapes), split_samples(module, arrays), suggest_db, **quantize_options
            )
        sys.stdout.write("\n" + sug.text())
        doc["suggestion"] = {
            "overrides": sug.overrides,
            "pipeline": sug.pipeline,
            "budget_db": sug.budget_db,
            "predicted_db": sug.predicted_db,
            "measured_db": sug.measured_db,
            "base_db": sug.base_db,
            "cycles": sug.cycles,
            "base_cycles": sug.base_cycles,
        }
    if json_path is not None:
        atomic_write(json_path, json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n")
    if not report.sim_exact:
        print(
            "error: the simulator and the pent reference disagree: a compiler or simulator bug (the table shows where)",
            file=sys.stderr,
        )
        return 1
    return 0


@quantize_flags
def check(
    model: Path = typer.Argument(
        ..., metavar="MODEL", help="Float model: .onnx, .json (trainer), .pt2 or an nn .pir.", show_default=False
    ),
    inputs: list[str] = typer.Option(
        [], "--input", "-i", metavar="NAME=FILE.npy", help="An input array (repeatable); FILE.npy alone for one input."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON (atomically)."),
    max_steps: int = typer.Option(
        DEFAULT_MAX_STEPS, "--max-steps", min=1, help="Instructions per sample before the step-limit fault."
    ),
    input_shape: list[str] = typer.Option(
        [], "--input-shape", help="Fix an input's dynamic shape, e.g. input=1x3x224x224 (repeatable)."
    ),
    sensitivity: bool = typer.Option(
        False, "--sensitivity", help="Also rank the layers by the output error each causes quantized alone."
    ),
    suggest_db: float | None = typer.Option(
        None,
        "--suggest",
        metavar="DB",
        help="Propose per-layer quantize overrides reaching this output SQNR (dB vs float) at the least cycles.",
    ),
    overrides: str | None = typer.Option(None, "--overrides", help="Per-layer quantize overrides (NODE:SPEC;...)."),
    quantize: dict[str, Any] | None = None,
) -> None:
    """Find where a compiled model loses accuracy, layer by layer.

    Compiles MODEL with the default pipeline and runs the input through onnxruntime (ONNX models), the float
    reference interpreter, the pent reference and the simulator. Prints per layer the error of the pent
    reference against the float graph (SQNR, max |error|, the SQNR lost in the layer) and whether the simulator
    matches the pent reference bit for bit; then the same for the outputs, with top-1 agreement for
    classifiers. Exit status 1 if the simulator and the pent reference disagree.
    """
    from pcc.drivers.compile import parse_input_shapes

    status = check_command(
        model,
        inputs,
        json_path=json_path,
        max_steps=max_steps,
        input_shapes=parse_input_shapes(input_shape) or None,
        sensitivity=sensitivity,
        suggest_db=suggest_db,
        **(quantize or {}),
        **({"overrides": overrides} if overrides else {}),
    )
    if status:
        raise typer.Exit(status)
