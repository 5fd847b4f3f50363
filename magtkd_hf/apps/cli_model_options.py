"""The options of the sub-commands that load a saved model for inference (`predict`, `stream`), and the loading."""

from ..precision import DTYPE_CHOICES, resolve_dtype


def add_model_options(parser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--dtype", default="native", choices=DTYPE_CHOICES,
        help="weights' dtype; native (default, the package's choice): bfloat16 on GPUs and CPUs that compute it "
        "natively (AVX512-BF16/AMX), else float32; auto: the checkpoint's dtype (transformers' meaning)",
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true",
        help="allow a folder whose model_type is not magtkd-hf's to run its own code (off: such folders are refused)",
    )


def load_model_for_inference(args):
    """(model, processor) of `args.model_dir` on `args.device` in `args.dtype`, as `add_model_options` parsed them."""
    from ..inference import load_emotion_model

    model, processor = load_emotion_model(args.model_dir, args.device, trust_remote_code=args.trust_remote_code)
    dtype = resolve_dtype(args.dtype, args.device)
    return (model if dtype is None else model.to(dtype)), processor
