"""The wire boundary: the only package that imports the generated `*_pb2` modules.

`tensors` turns tensors into `swarm.v1.Tensor` and back; `entries` signs-ready DHT
payloads and server records; `messages` the block service's requests and answers.
Everything outside this package passes our own dataclasses and torch tensors.
"""
