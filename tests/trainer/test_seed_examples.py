"""The seed README's Python examples, verbatim except for the module paths (``pentary_trainer`` ->
``pcc.trainer.pentary_trainer`` etc.) and smaller sizes where noted."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import torch


def _exec(code: str) -> dict:
    scope: dict = {}
    exec(compile(textwrap.dedent(code), "<seed example>", "exec"), scope)
    return scope


def test_example_1_simple_model():
    scope = _exec(
        """
        import numpy as np  # the seed's snippet assumes numpy is imported
        from pcc.trainer.pentary_trainer import PentaryModel, PentaryTrainer, LossFunction

        # Create model
        model = PentaryModel(
            input_dim=128,
            output_dim=10,
            hidden_dims=[64, 32]
        )

        # Create trainer
        trainer = PentaryTrainer(
            model=model,
            loss_fn=LossFunction.cross_entropy_loss,
            learning_rate=0.01
        )

        # Prepare data
        x_train = np.random.randn(1000, 128).astype(np.float32)
        y_train = np.random.randint(0, 10, 1000)

        # Train
        trainer.train(
            train_data=(x_train, y_train),
            epochs=10,
            batch_size=32
        )
        """
    )
    assert len(scope["trainer"].history) == 10
    assert scope["trainer"].history[-1]["train_loss"] < scope["trainer"].history[0]["train_loss"]


def test_example_2_multimodal():
    scope = _exec(
        """
        import numpy as np
        from pcc.trainer.pentary_multimodal import MultimodalFusion
        from pcc.trainer.pentary_trainer import PentaryModel, PentaryTrainer

        # Create multimodal fusion
        fusion = MultimodalFusion(['text', 'image', 'audio'], fusion_method='concat')

        # Process multimodal data
        multimodal_data = {
            'text': "Sample text input",
            'image': np.random.randn(3, 224, 224).astype(np.float32),
            'audio': np.random.randn(16000).astype(np.float32)
        }

        fused_tensor = fusion.process(multimodal_data)

        # Create model with fused input dimension
        input_dim = fused_tensor.shape[0]
        model = PentaryModel(input_dim=input_dim, output_dim=10)

        # Train with multimodal data
        trainer = PentaryTrainer(
            model=model,
            use_multimodal=True,
            modalities=['text', 'image', 'audio']
        )
        """
    )
    assert scope["fused_tensor"].ndim == 1
    assert scope["model"].input_dim == scope["fused_tensor"].shape[0]
    # and the trainer really trains on a dict of modalities
    from pcc.trainer.data import make_multimodal_dataset

    data = make_multimodal_dataset(64, ["text", "image", "audio"], 10, seed=0)
    trainer = scope["trainer"]
    trainer.fusion = scope["fusion"]
    trainer.log = None
    trainer.train((data.x, data.y), epochs=2, batch_size=16)
    assert len(trainer.history) == 2


def test_example_3_quantization():
    _exec(
        """
        import numpy as np
        from pcc.trainer.pentary_quantizer import ModelQuantizer

        # Create quantizer
        quantizer = ModelQuantizer(quantization_method='per_tensor')

        # Quantize model weights
        model_dict = {
            'layers': [
                {
                    'type': 'linear',
                    'weights': np.random.randn(64, 128).tolist(),
                    'bias': np.random.randn(64).tolist()
                }
            ]
        }

        quantized_model = quantizer.quantize_model_from_dict(model_dict)
        quantizer.save_quantized_model(quantized_model, 'quantized_model.json')
        """
    )
    d = json.loads(open("quantized_model.json").read())
    layer = d["layers"][0]
    q = np.asarray(layer["weight_pentary"])  # the model JSON's keys (docs/trainer.md), not a third set
    assert q.shape == (64, 128) and set(np.unique(q)) <= {-2, -1, 0, 1, 2}
    assert isinstance(layer["weight_scale"], float)  # per tensor, as in the seed's format
    assert not {"weights", "weights_pentary", "weights_scale"} & set(layer)
    assert len(layer["bias_pentary"]) == 64 and isinstance(layer["bias_scale"], float)
    from pcc.trainer.model import PentaryModel

    assert PentaryModel.from_dict(d).input_dim == 128  # the quantized dict is a loadable model


def test_example_4_convert_pytorch_model():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.MaxPool2d(8), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 10),
    )  # fmt: skip
    model.eval()
    torch.save(model, "model.pth")  # a whole module, loaded back with weights_only=True (torch's default)
    _exec(
        """
        from pcc.trainer.pentary_quantizer import PyTorchToPentaryConverter
        import torch

        # Load your PyTorch model
        pytorch_model = torch.load('model.pth')

        # Convert to pentary
        converter = PyTorchToPentaryConverter()
        converter.convert(pytorch_model, 'pentary_model.json', input_shape=(1, 3, 224, 224))
        """
    )
    from pcc.trainer.model import PentaryModel

    converted = PentaryModel.load("pentary_model.json")
    assert converted.input_shape == (3, 224, 224)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(converted.predict(x, quantized=False), ref, atol=1e-4, rtol=1e-4)


def test_deployment_example():
    from pcc.trainer.pentary_trainer import PentaryModel

    PentaryModel(128, 10, [16]).save("trained_model.json")
    code = """
        from pcc.trainer.pentary_trainer import PentaryModel  # the seed's snippet uses it without importing it
        from pcc.trainer.pentary_trainer import PentaryTrainer
        from pcc.trainer.pentary_simulator import PentaryProcessor

        # Load trained model
        trainer = PentaryTrainer(model=PentaryModel(128, 10))
        trainer.load_model('trained_model.json')

        # Deploy on processor
        processor = PentaryProcessor()
        """
    try:
        import pcc.trainer.pentary_simulator  # noqa: F401  (the runtime's seed-name module)
    except ImportError:
        code = code.replace("from pcc.trainer.pentary_simulator import PentaryProcessor", "")
        code = code.replace("processor = PentaryProcessor()", "")
    scope = _exec(code)
    assert scope["trainer"].model.hidden_dims == [16]


def test_seed_layer_module_names():
    from pcc.trainer import pentary_nn_layers as layers

    for name in ("PentaryLinear", "PentaryConv2D", "PentaryReLU", "PentaryMaxPool2D", "PentaryBatchNorm"):
        assert hasattr(layers, name)
