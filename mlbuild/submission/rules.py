"""What MLPerf's submission checker (v6.0, open division) reads: the facts of spec §1.9."""

from __future__ import annotations

CHECKER_VERSION = "v6.0"
DIVISIONS = ("open", "closed")
# systems/<system>.json: every key required (constants.SYSTEM_DESC_REQUIRED_FIELDS, 35 keys)
SYSTEM_REQUIRED_FIELDS = (
    "division", "submitter", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_storage_capacity",
    "host_storage_type", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack", "host_processor_frequency",
    "host_processor_caches", "host_memory_configuration", "host_processor_interconnect", "host_networking",
    "host_networking_topology", "accelerator_frequency", "accelerator_host_interconnect",
    "accelerator_interconnect", "accelerator_interconnect_topology", "accelerator_memory_configuration",
    "accelerator_on-chip_memories", "cooling", "hw_notes", "sw_notes", "host_network_card_count",
    "system_type_detail",
)
# ... of which these need a meaningful (non-empty) answer
SYSTEM_MEANINGFUL_FIELDS = (
    "division", "submitter", "system_type", "status", "system_name", "number_of_nodes",
    "host_processor_model_name", "host_processors_per_node", "host_processor_core_count", "host_memory_capacity",
    "host_memory_configuration", "host_storage_capacity", "host_storage_type", "host_networking",
    "host_network_card_count", "host_networking_topology", "accelerators_per_node", "accelerator_model_name",
    "accelerator_memory_capacity", "accelerator_host_interconnect", "accelerator_memory_configuration",
    "accelerator_interconnect", "cooling", "framework", "operating_system", "other_software_stack",
)
SYSTEM_STATUSES = ("available", "preview", "rdi")
SYSTEM_TYPES = ("datacenter", "edge", "datacenter,edge", "edge,datacenter")
MEASUREMENTS_FIELDS = ("input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                       "weight_transformations")
MAX_ACCURACY_LOG_SIZE = 10 * 1024  # accuracy/mlperf_log_accuracy.json, after truncation
TRUNCATE_VIEWABLE = 4096  # truncate_accuracy_log.py: the first and last 4096 characters around "...\n"
MIN_DURATION_MS = 600_000  # min_duration_check: effective_min_duration_ms, in open too
MIN_PERFORMANCE_SAMPLE_COUNT = 64  # performance_sample_count_check
# seeds_check: the round's effective qsl / sample-index / schedule seeds
ROUND_SEEDS: dict[str, tuple[int, int, int]] = {
    "v5.1": (1780908523862526354, 14771362308971278857, 18209322760996052031),
    "v6.0": (2465351861681999779, 14276810075590677512, 3936089224930324775),
    "v6.1": (2085463073848966840, 2747215439041700203, 16159082839903944936),
}
# accuracy_result_check: ACC_PATTERN["mAP"]
MAP_PATTERN = r".*(?:mAP=|'Total':)\s*([\d.]+)"
HASH_PATTERN = r"^hash=([0-9a-f]{64})\s*$"
# decoder (layout.model_kind_of) -> (directory name under results/<system>/, the MLPerf benchmark it maps to)
MODELS: dict[str, tuple[str, str]] = {
    "retinanet": ("retinanet", "retinanet"),
    # YOLOX-nano is not MLPerf's YOLO: an open-division custom model, mapped by model_mapping.json
    "yolox": ("yolox-nano", "yolo-95"),
    # an Ultralytics YOLO export (MLPerf's yolo family), submitted as an open model mapped to yolo-95
    "ultralytics": ("yolo-ultralytics", "yolo-95"),
}
# the model names the LoadGen's mlperf.conf knows (the decoders' `mlperf_model`: settings are looked up under them)
MLPERF_CONF_NAME = {"yolox": "yolo", "ultralytics": "yolo", "retinanet": "retinanet"}
SCENARIOS = ("Offline", "SingleStream", "MultiStream", "Server")
# summary.csv's Units per scenario (constants.UNIT_DICT)
UNITS = {"SingleStream": "Latency (ms)", "MultiStream": "Latency (ms)", "Offline": "Samples/s", "Server": "Queries/s"}
