"""tf-admm: ADMM weight pruning and quantization for TensorFlow/Keras."""

import setuptools

setuptools.setup(
    name='tf-admm',
    version='0.1.0',
    description='ADMM weight pruning and quantization for Keras 3 and '
    'Keras 2 (tf_keras) models, exported to TFLite.',
    packages=setuptools.find_packages(include=['tf_admm', 'tf_admm.*',
                                               'tflite_export',
                                               'tflite_export.*']),
    python_requires='>=3.11,<3.12',
    install_requires=[
        'tensorflow==2.21.0',
        'keras==3.15.1',
        'tf_keras==2.21.0',
        'tensorflow-model-optimization==0.8.1',
        'tensorflow-datasets==4.9.10',
        'importlib_resources==7.1.0',
        'ai-edge-litert==2.3.0',
        'ai-edge-quantizer==0.10.0',
        'absl-py==1.4.0',
        'numpy==2.4.6',
        'matplotlib==3.11.2',
    ],
    extras_require={'test': ['pytest==9.2.0', 'pytest-xdist==3.8.0',
                            'tensorboard==2.21.0']},
)
