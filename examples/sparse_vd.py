"""Sparse Variational Dropout on LeNet-300-100 or LeNet-5, as in Molchanov et al. (2017).

The paper's recipe: pretrain the dense net, sparsify it, then fine-tune with
the KL weight warmed up from 0 to 1. On MNIST the paper reports 68x
compression for LeNet-300-100 (1.92% error) and 280x for LeNet-5-Caffe
(0.75% error) after 200 epochs.

    python examples/sparse_vd.py                       # digits, small and fast
    python examples/sparse_vd.py --data mnist --net lenet5 --epochs 200

MNIST comes through keras.datasets; offline, the loader says where to put
the file.
"""

import argparse

from tfpriors_cli import start_tensorflow

start_tensorflow()  # imports TensorFlow without its start-up log lines

import keras  # noqa: E402

import tfpriors  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=sorted(tfpriors.datasets.LOADERS))
    parser.add_argument("--net", default="lenet_300_100", choices=["lenet_300_100", "lenet5"])
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    flat = args.net == "lenet_300_100"
    (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load(args.data, flat=flat)
    num_classes = int(y_train.max()) + 1
    build = getattr(tfpriors.models, args.net)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    dense = build(x_train.shape[1:], num_classes, kind="dense")
    dense.compile("adam", loss, metrics=["accuracy"])
    dense.fit(
        x_train,
        y_train,
        epochs=args.pretrain_epochs,
        batch_size=args.batch_size,
        verbose=0,
        callbacks=[tfpriors.callbacks.EpochProgressBar("dense")],
    )
    _, dense_accuracy = dense.evaluate(x_test, y_test, verbose=0)

    sparse = tfpriors.sparsify(dense)
    tfpriors.set_dataset_size(sparse, len(x_train))
    sparse.compile("adam", loss, metrics=["accuracy"])
    warmup_end = max(1, args.epochs // 3)
    sparse.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
        callbacks=[
            tfpriors.callbacks.KLWarmup(0, warmup_end),
            tfpriors.callbacks.SparsityMonitor(per_layer=False),
            tfpriors.callbacks.EpochProgressBar("sparse vd"),
        ],
    )
    _, sparse_accuracy = sparse.evaluate(x_test, y_test, verbose=0)

    report = tfpriors.compression_report(sparse)
    print(report)
    print(
        f"dense test error {1 - dense_accuracy:.2%}; Sparse VD test error "
        f"{1 - sparse_accuracy:.2%} at {report.total_compression:.1f}x compression"
    )


if __name__ == "__main__":
    main()
