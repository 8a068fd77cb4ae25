# store tests
# The durable store (runtime/src/store*.c) on real LMDB files.
wisp_unit_test(test_store)
