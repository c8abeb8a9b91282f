"""Throughput, memory and precision benchmark of videobert-cli (``python -m bench.run``).

Modules:
    inputs   - synthetic H.264 videos and a long SRT transcript, cached in ``bench/.cache/``
    measure  - one measurement per fresh interpreter (``python -m bench.measure SPEC``)
    run      - the driver: generates inputs, runs the measurements, prints the tables
"""
