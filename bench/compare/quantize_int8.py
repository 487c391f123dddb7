#!/usr/bin/env python3
"""Dynamic int8 quantisation of an ONNX model for ONNX Runtime, with `onnx` only.

    python3 bench/compare/quantize_int8.py in.onnx out.onnx [--per-channel] [--conv]

ONNX Runtime's own `onnxruntime.quantization.quantize_dynamic` is a Python package that Debian
does not ship; this file writes the same kind of graph with Debian's `python3-onnx`. Every MatMul
and Gemm whose weight is a constant initializer becomes

    x -> DynamicQuantizeLinear -> (x_q u8, x_scale, x_zero)
    MatMulInteger(x_q, W_q s8, x_zero, W_zero) -> Cast(float) -> Mul(x_scale * W_scale) [-> Add(bias)]

which ONNX Runtime's graph optimiser (level 'all') fuses into MatMulIntegerToFloat and then
DynamicQuantizeMatMul: one kernel that quantises the activation per tensor (u8, asymmetric) and
runs MLAS's u8 x s8 GEMM against the pre-packed weight, with the scale and bias in its epilogue.
Each MatMul gets its own DynamicQuantizeLinear, because the second fusion needs the quantised
activation to have exactly one consumer.

Weights are symmetric int8 (zero point 0, scale = max|w| / 127): per tensor by default, as
quantize_dynamic does; --per-channel uses one scale per output column (MatMulInteger accepts a
per-column zero point; whether the fused kernels accept per-column scales depends on the ONNX
Runtime version: check with `ort_bench.js run --optimized`).

Convolutions are left in float unless --conv is given. With --conv each Conv becomes
DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul -> Add(bias), which is what quantize_dynamic
emits. The weights are then u8, asymmetric, one scale and zero point per tensor: ONNX Runtime's
CPU ConvInteger kernel accepts nothing else. It has no fused float-output kernel for this
pattern, so the chain runs op by op.
"""
import argparse
import os
import sys

import numpy as np

import onnx
from onnx import TensorProto, helper, numpy_helper


def _symmetric_s8(w, per_channel):
    """w: [K, N] float32 -> (q int8 [K, N], scale [N] or [], zero int8 same shape as scale)."""
    amax = np.abs(w).max(axis=0) if per_channel else np.array(np.abs(w).max())
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale, np.zeros(scale.shape, np.int8)


def _asymmetric_u8(w):
    """Conv weight -> (q uint8, scale, zero uint8), one scale and zero point for the tensor."""
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = np.float32((hi - lo) / 255.0 if hi > lo else 1.0)
    zero = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
    q = np.clip(np.rint(w / scale) + float(zero), 0, 255).astype(np.uint8)
    return q, scale, zero


class _Rewriter:
    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.new_inits = []
        self.counter = 0
        self.stats = {"MatMul": 0, "Gemm": 0, "Conv": 0}

    def name(self, base):
        self.counter += 1
        return f"{base}_q{self.counter}"

    def const(self, base, array):
        n = self.name(base)
        self.new_inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def array(self, name):
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def dynamic_quantize(self, x, nodes):
        q, s, z = self.name(x + "_u8"), self.name(x + "_scale"), self.name(x + "_zero")
        nodes.append(helper.make_node("DynamicQuantizeLinear", [x], [q, s, z], name=self.name("dql")))
        return q, s, z

    def matmul(self, x, w, bias, out, nodes, per_channel):
        """out = x @ w (+ bias) with w [K, N] float32 constant."""
        wq, ws, wz = _symmetric_s8(w, per_channel)
        xq, xs, xz = self.dynamic_quantize(x, nodes)
        acc, accf, scale = self.name("acc"), self.name("accf"), self.name("scale")
        nodes.append(helper.make_node("MatMulInteger", [xq, self.const("w", wq), xz, self.const("wzero", wz)], [acc],
                                      name=self.name("mmi")))
        nodes.append(helper.make_node("Cast", [acc], [accf], to=TensorProto.FLOAT, name=self.name("cast")))
        nodes.append(helper.make_node("Mul", [xs, self.const("wscale", ws)], [scale], name=self.name("mulscale")))
        if bias is None:
            nodes.append(helper.make_node("Mul", [accf, scale], [out], name=self.name("mul")))
        else:
            scaled = self.name("scaled")
            nodes.append(helper.make_node("Mul", [accf, scale], [scaled], name=self.name("mul")))
            nodes.append(helper.make_node("Add", [scaled, self.const("bias", bias.astype(np.float32))], [out],
                                          name=self.name("bias")))

    def conv(self, node, nodes):
        w = self.array(node.input[1])
        bias = self.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        wq, ws, wz = _asymmetric_u8(w)
        xq, xs, xz = self.dynamic_quantize(node.input[0], nodes)
        acc, accf, scale = self.name("acc"), self.name("accf"), self.name("scale")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("ConvInteger", [xq, self.const("w", wq), xz, self.const("wzero", wz)], [acc],
                                      name=self.name("convi"), **attrs))
        nodes.append(helper.make_node("Cast", [acc], [accf], to=TensorProto.FLOAT, name=self.name("cast")))
        nodes.append(helper.make_node("Mul", [xs, self.const("wscale", ws)], [scale],
                                      name=self.name("mulscale")))
        out = node.output[0]
        scaled = self.name("scaled") if bias is not None else out
        nodes.append(helper.make_node("Mul", [accf, scale], [scaled], name=self.name("mul")))
        if bias is not None:
            nodes.append(helper.make_node("Add", [scaled, self.const("bias", bias.reshape(-1, 1, 1))], [out],
                                          name=self.name("bias")))

    def run(self, per_channel, conv):
        # PyTorch's exporter shares equal initializers through Identity nodes; look through them.
        alias = {n.output[0]: n.input[0] for n in self.graph.node
                 if n.op_type == "Identity" and n.input[0] in self.inits}
        graph_outputs = {o.name for o in self.graph.output}
        nodes = []
        for node in self.graph.node:
            if node.op_type == "Identity" and node.output[0] in alias and node.output[0] not in graph_outputs:
                continue
            for i, name in enumerate(node.input):
                if name in alias:
                    node.input[i] = alias[name]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "MatMul" and node.input[1] in self.inits and self.array(node.input[1]).ndim == 2:
                self.matmul(node.input[0], self.array(node.input[1]), None, node.output[0], nodes, per_channel)
                self.stats["MatMul"] += 1
            elif (node.op_type == "Gemm" and node.input[1] in self.inits and not attrs.get("transA", 0)
                  and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
                  and (len(node.input) < 3 or not node.input[2] or
                       (node.input[2] in self.inits and self.array(node.input[2]).ndim == 1))):
                w = self.array(node.input[1])
                w = w.T if attrs.get("transB", 0) else w
                bias = self.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
                self.matmul(node.input[0], np.ascontiguousarray(w), bias, node.output[0], nodes, per_channel)
                self.stats["Gemm"] += 1
            elif conv and node.op_type == "Conv" and node.input[1] in self.inits:
                self.conv(node, nodes)
                self.stats["Conv"] += 1
            else:
                nodes.append(node)
        used = {i for n in nodes for i in n.input} | graph_outputs
        kept = [t for t in self.graph.initializer if t.name in used]
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept + self.new_inits)
        return self.stats


def quantize(in_path, out_path, per_channel=False, conv=False):
    """Writes the quantised model; returns the number of rewritten nodes per op type."""
    model = onnx.load(in_path)  # external data (a graph over 2 GB) is read from beside it
    stats = _Rewriter(model).run(per_channel, conv)
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights > 1_500_000_000:  # protobuf's 2 GB limit: weights go to one file beside the graph
        onnx.save(model, out_path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=os.path.basename(out_path) + ".data")
    else:
        onnx.save(model, out_path)
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--per-channel", action="store_true", help="one weight scale per output column")
    ap.add_argument("--conv", action="store_true", help="also quantise Conv (ConvInteger)")
    args = ap.parse_args()
    print(quantize(args.input, args.output, args.per_channel, args.conv))


if __name__ == "__main__":
    sys.exit(main())
