// Where an installed sdgraph keeps its data: PREFIX/share/sdgraph/WHAT ("graphs", "models",
// "clip-tokenizer"), found from a binary in PREFIX/bin (ANCHOR/../share) or from the GEGL plugin in
// PREFIX/lib/gegl-0.4 (ANCHOR/../../share). One spelling of the install layout for every lookup.
//
//   std::string dir = FindInstalledDir(DirOfExecutable(), "clip-tokenizer", "vocab.json");
#pragma once

#include <string>
#include <vector>

namespace sd {

// The candidate folders for WHAT next to `anchor_dir`, in order; none for an empty anchor.
std::vector<std::string> InstalledDataDirs(const std::string& anchor_dir, const std::string& what);

// The first of InstalledDataDirs(anchor_dir, what) that holds the readable file `probe`; "" if
// none.
std::string FindInstalledDir(const std::string& anchor_dir, const std::string& what,
                             const std::string& probe);

}  // namespace sd
