"""The deeper networks of the book's chapter 8 tour (VGG, GoogLeNet, ResNet), sized for 28x28.

Plans as in builders.py, with blocks (blocks.py) where the net branches. Layer names follow
the book nets' convention (conv1, bn_conv1, relu_conv1, pool1, affine1); inside a block
they are the block's own (block2.conv1, inception1.branch2.reduce) so that every parameter
has one dotted name in the flat buffer. Every conv but the first needs its input gradient.

    vgg        stages of 3x3 convs (same padding) [+ BatchNorm] + ReLU, then 2x2 max pooling;
               flatten - affine(hidden) - [bn] - relu - [dropout] - affine(classes)
    googlenet  stem conv - pool, Inception blocks (2x2 pools after those in pool_after),
               global average pooling - [dropout] - affine(classes)
    resnet     stem conv, stages of residual blocks (the first of each later stage halves
               the maps, stride 2, with a 1x1 projection shortcut), global average
               pooling - [dropout] - affine(classes)
"""


def _conv(plan, prefix, name, shape, batchnorm, stride=1, pad=0, relu=True, first=False):
    """conv [- bn] [- relu] entries named prefix+name, prefix+'bn_'+name, prefix+'relu_'+name."""
    attrs = {"shape": shape, "pad": pad, "stride": stride}
    if first:
        attrs["need_dx"] = False  # the gradient of the input itself is never used
    plan.append((prefix + name, "conv", attrs))
    if batchnorm:
        plan.append((f"{prefix}bn_{name}", "bn", {"size": shape[0]}))
    if relu:
        plan.append((f"{prefix}relu_{name}", "relu", {}))


def _pool(plan, name, size, stride, pad=0):
    plan.append((name, "pool", {"size": size, "stride": stride, "pad": pad}))


def _stem(spec, filters):
    """to_nhwc, then conv1 (3x3, same padding) [- bn] - relu: every chapter 8 net's start."""
    c = spec["input_shape"][0]
    plan = [("to_nhwc", "to_nhwc", {"input_shape": tuple(spec["input_shape"])})]
    _conv(plan, "", "conv1", (filters, c, 3, 3), spec["batchnorm"], pad=1, first=True)
    return plan


def _scores(plan, spec, features):
    """[dropout1] - affine1 (features -> classes): the head after global average pooling."""
    if spec["dropout"]:
        plan.append(("dropout1", "dropout", {"ratio": spec["dropout"]}))
    plan.append(("affine1", "affine", {"shape": (features, spec["output_size"])}))


def vgg_plan(spec):
    filters, (_, h, w) = spec["filters"], spec["input_shape"]
    plan = _stem(spec, filters[0])
    c_in, i = filters[0], 1
    for stage, c in enumerate(filters):
        for _ in range(spec["convs"] - (stage == 0)):  # the stem is stage 1's first conv
            i += 1
            _conv(plan, "", f"conv{i}", (c, c_in, 3, 3), spec["batchnorm"], pad=1)
            c_in = c
        _pool(plan, f"pool{stage + 1}", 2, 2)
        h, w = h // 2, w // 2
    hidden = spec["hidden"]
    plan.append(("flatten", "flatten", {}))
    plan.append(("affine1", "affine", {"shape": (c_in * h * w, hidden)}))
    if spec["batchnorm"]:
        plan.append(("bn1", "bn", {"size": hidden}))
    plan.append(("relu1", "relu", {}))
    if spec["dropout"]:
        plan.append(("dropout1", "dropout", {"ratio": spec["dropout"]}))
    plan.append(("affine2", "affine", {"shape": (hidden, spec["output_size"])}))
    return plan


def _inception(spec, c_in, sizes):
    """The block's four branches: 1x1; 1x1 -> 3x3; 1x1 -> 5x5 (or two 3x3); pool -> 1x1."""
    c1, c3_reduce, c3, c5_reduce, c5, pool_proj = sizes
    bn = spec["batchnorm"]
    b1, b2, b3, b4 = [], [], [], []
    _conv(b1, "branch1.", "conv", (c1, c_in, 1, 1), bn)
    _conv(b2, "branch2.", "reduce", (c3_reduce, c_in, 1, 1), bn)
    _conv(b2, "branch2.", "conv", (c3, c3_reduce, 3, 3), bn, pad=1)
    _conv(b3, "branch3.", "reduce", (c5_reduce, c_in, 1, 1), bn)
    if spec["double_3x3"]:  # Inception v2: two 3x3 see a 5x5 window with fewer weights
        _conv(b3, "branch3.", "conv1", (c5, c5_reduce, 3, 3), bn, pad=1)
        _conv(b3, "branch3.", "conv2", (c5, c5, 3, 3), bn, pad=1)
    else:
        _conv(b3, "branch3.", "conv", (c5, c5_reduce, 5, 5), bn, pad=2)
    _pool(b4, "branch4.pool", 3, 1, pad=1)
    _conv(b4, "branch4.", "conv", (pool_proj, c_in, 1, 1), bn)
    return {"branches": [b1, b2, b3, b4]}, c1 + c3 + c5 + pool_proj


def googlenet_plan(spec):
    plan = _stem(spec, spec["stem"])
    _pool(plan, "pool1", 2, 2)
    c_in, pools = spec["stem"], 1
    for k, sizes in enumerate(spec["inception"], start=1):
        attrs, c_in = _inception(spec, c_in, sizes)
        plan.append((f"inception{k}", "inception", attrs))
        if k in spec["pool_after"]:
            pools += 1
            _pool(plan, f"pool{pools}", 2, 2)
    plan.append(("gap", "gap", {}))
    _scores(plan, spec, c_in)
    return plan


def _residual(spec, c_in, c_out, stride):
    """body conv1 (3x3, stride) - bn - relu - conv2 (3x3) - bn; shortcut: identity, or a
    1x1 projection (stride) - bn where the shape changes."""
    bn = spec["batchnorm"]
    body, shortcut = [], []
    _conv(body, "", "conv1", (c_out, c_in, 3, 3), bn, stride=stride, pad=1)
    _conv(body, "", "conv2", (c_out, c_out, 3, 3), bn, pad=1, relu=False)
    if stride != 1 or c_in != c_out:
        _conv(shortcut, "", "proj", (c_out, c_in, 1, 1), bn, stride=stride, relu=False)
    return {"body": body, "shortcut": shortcut}


def resnet_plan(spec):
    channels = spec["channels"]
    plan = _stem(spec, channels[0])
    c_in, k = channels[0], 0
    for stage, (c, blocks) in enumerate(zip(channels, spec["blocks"], strict=True)):
        for j in range(blocks):
            k += 1
            stride = 2 if stage > 0 and j == 0 else 1
            plan.append((f"block{k}", "residual", _residual(spec, c_in, c, stride)))
            plan.append((f"relu_block{k}", "relu", {}))  # after the sum, as in He et al.
            c_in = c
    plan.append(("gap", "gap", {}))
    _scores(plan, spec, c_in)
    return plan
