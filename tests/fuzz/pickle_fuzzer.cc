// libFuzzer target: the restricted unpickler alone (the zip layer's CRC would hide most pickle mutations
// from the .ckpt fuzzer). Persistent ids resolve to small fake storages, as the .ckpt reader would.
#include <cstddef>
#include <cstdint>

#include "nodes/weights/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sd::PersistentLoader loader = [](const sd::PVal& pid) -> absl::StatusOr<sd::PVal> {
    auto v = std::make_shared<sd::PickleValue>();
    v->kind = sd::PickleValue::Kind::kStorage;
    v->storage_numel = pid->items.size() * 16;
    v->str = "0";
    return sd::PVal(v);
  };
  auto v = sd::Unpickle(data, size, loader, "fuzz.pkl");
  if (v.ok()) (void)(*v)->Describe();
  return 0;
}
