"""The official Triton HTTP client (tritonclient.http) against infergate's
KServe v2 routes: health and metadata, binary tensor data in both directions
(the client's default), JSON outputs, an error, and optionally an OCR model
given a raw image file. Prints PASS when every check holds."""

import argparse
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="host:port")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", help="an identity tensor model (INPUTn -> OUTPUTn)")
    parser.add_argument("--ocr-model")
    parser.add_argument("--ocr-image", help="an image file for the OCR model")
    parser.add_argument("--ocr-expect", default="", help="words the OCR text must contain")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"}
    client = httpclient.InferenceServerClient(url=args.url)

    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert "binary_tensor_data" in client.get_server_metadata(headers=headers)["extensions"]

    if args.model:
        assert client.is_model_ready(args.model, headers=headers)
        arrays = [
            ("FP32", np.array([[1, 2, 3], [4, 5, 6.5]], dtype=np.float32)),
            ("INT64", np.array([-1, 9007199254740993], dtype=np.int64)),
            ("BYTES", np.array([b"hello", "w\u00f6rld".encode()], dtype=np.object_)),
            ("FP16", np.array([0.5, -2.0, 1024.0], dtype=np.float16)),
            ("UINT8", np.array([[0, 255], [7, 8]], dtype=np.uint8)),
            ("BOOL", np.array([True, False, True], dtype=np.bool_)),
        ]
        inputs = []
        for i, (datatype, array) in enumerate(arrays):
            tensor = httpclient.InferInput(f"INPUT{i}", list(array.shape), datatype)
            tensor.set_data_from_numpy(array)  # binary_data=True, the default
            inputs.append(tensor)
        # Outputs in binary, except OUTPUT1 in JSON.
        outputs = [
            httpclient.InferRequestedOutput(f"OUTPUT{i}", binary_data=(i != 1)) for i in range(len(arrays))
        ]
        result = client.infer(args.model, inputs, outputs=outputs, request_id="req-9", headers=headers)
        assert result.get_response()["id"] == "req-9", result.get_response()
        for i, (datatype, array) in enumerate(arrays):
            got = result.as_numpy(f"OUTPUT{i}")
            assert got is not None, f"OUTPUT{i} missing"
            assert got.shape == array.shape, (datatype, got.shape, array.shape)
            assert (got == array).all(), (datatype, got, array)
            print(f"ok  {datatype} round trip")
        # No outputs named: the server answers every output in JSON.
        plain = client.infer(args.model, inputs[:1], headers=headers)
        assert (plain.as_numpy("OUTPUT0") == arrays[0][1]).all()
        # A shape that does not match the data is the client's error.
        wrong = httpclient.InferInput("INPUT0", [2, 3], "FP32")
        wrong.set_data_from_numpy(arrays[0][1])
        wrong.set_shape([4, 3])
        try:
            client.infer(args.model, [wrong], headers=headers)
            raise AssertionError("a mismatched shape was accepted")
        except InferenceServerException as e:
            assert e.status() == "400", e.status()
            print(f"ok  bad shape: {e.message()}")

    if args.ocr_model:
        with open(args.ocr_image, "rb") as f:
            image = f.read()
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([image], dtype=np.object_))
        result = client.infer(args.ocr_model, [tensor], headers=headers)
        text = " ".join(t.decode() for t in result.as_numpy("text"))
        boxes = result.as_numpy("boxes")
        assert boxes.shape[1:] == (4, 2), boxes.shape
        for word in args.ocr_expect.split():
            assert word in text, (word, text)
        print(f"ok  OCR: {text!r}")

    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
