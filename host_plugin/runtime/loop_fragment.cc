#include "host_plugin/runtime/loop_fragment.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nodes/base/status_macros.h"

namespace sd {

std::string FragmentName(const std::string& name) {
  std::string out = name;
  std::replace(out.begin(), out.end(), '/', '~');
  return out;
}

std::string WithHostNames(const LoopFragment& f, std::string message) {
  std::vector<std::pair<std::string, std::string>> quoted;
  for (const auto& [there, here] : f.names) {
    if (there != here) quoted.emplace_back("'" + there + "'", "'" + here + "'");
  }
  return absl::StrReplaceAll(message, quoted);
}

namespace {

class FragmentWriter {
 public:
  FragmentWriter(const PlannedLoop& pl, const GraphPlan& plan) : pl_(pl), plan_(plan) {
    for (const v1::Node& n : pl.loop->node()) body_.insert(n.name());
  }

  absl::StatusOr<LoopFragment> Write(const std::vector<std::string>& captured) {
    const v1::Loop& l = *pl_.loop;
    v1::Loop* out = f_.config.add_loop();
    SD_ASSIGN_OR_RETURN(std::string loop_name, Name(l.name()));
    out->set_name(loop_name);
    SD_ASSIGN_OR_RETURN(std::string timesteps, Outside(l.timesteps()));
    out->set_timesteps(timesteps);
    for (const v1::Carry& c : l.carry()) {
      v1::Carry* fc = out->add_carry();
      fc->set_name(c.name());
      SD_ASSIGN_OR_RETURN(std::string init, Outside(c.init()));
      SD_ASSIGN_OR_RETURN(std::string next, Inside(c.next()));
      fc->set_init(init);
      fc->set_next(next);
      SD_RETURN_IF_ERROR(
          Output(absl::StrCat(loop_name, ".", c.name()), absl::StrCat(l.name(), ".", c.name())));
    }
    for (const v1::Node& n : l.node()) {
      v1::Node* fn = out->add_node();
      *fn = n;
      SD_ASSIGN_OR_RETURN(std::string name, Name(n.name()));
      fn->set_name(name);
      for (std::string& in : *fn->mutable_input()) {
        const size_t eq = in.find('=');
        if (eq == std::string::npos) continue;
        SD_ASSIGN_OR_RETURN(std::string src, Inside(in.substr(eq + 1)));
        in = absl::StrCat(in.substr(0, eq), "=", src);
      }
    }
    for (const std::string& c : captured) {
      if (!body_.count(c.substr(0, c.find('.'))))
        return absl::InvalidArgumentError(
            absl::StrCat("'", c, "' is not a value of loop '", l.name(), "'"));
      SD_ASSIGN_OR_RETURN(std::string src, Inside(c));
      auto type = plan_.types.find(c);
      if (type == plan_.types.end())
        return absl::InvalidArgumentError(absl::StrCat("'", c, "' has no type"));
      f_.captures.push_back(src);
      f_.outputs.emplace_back(src, c);
      f_.output_types[src] = type->second;
    }
    return std::move(f_);
  }

 private:
  // A name there, unique: two names here may not become one.
  absl::StatusOr<std::string> Name(const std::string& here) {
    const std::string there = FragmentName(here);
    auto [it, added] = f_.names.emplace(there, here);
    if (!added && it->second != here) {
      return absl::InvalidArgumentError(absl::StrCat("loop '", pl_.loop->name(), "': names '",
                                                     it->second, "' and '", here,
                                                     "' can't both be sent to a worker"));
    }
    return there;
  }

  // A source read inside the body: the body's own values keep their meaning, the rest come in.
  absl::StatusOr<std::string> Inside(const std::string& src) {
    if (src.rfind(kLoopScope, 0) == 0) return src;
    const size_t dot = src.find('.');
    if (src[0] != '@' && dot != std::string::npos && body_.count(src.substr(0, dot)))
      return absl::StrCat(FragmentName(src.substr(0, dot)), src.substr(dot));
    return Outside(src);
  }

  // A source outside the loop: a graph input of the fragment (one per source).
  absl::StatusOr<std::string> Outside(const std::string& src) {
    auto known = inputs_.find(src);
    if (known != inputs_.end()) return "@" + known->second;
    auto type = plan_.types.find(src);
    if (type == plan_.types.end())
      return absl::InvalidArgumentError(
          absl::StrCat("loop '", pl_.loop->name(), "' reads '", src, "', which has no type"));
    const std::string name = absl::StrCat("in", inputs_.size());
    v1::GraphInput* in = f_.config.add_input();
    in->set_name(name);
    *in->mutable_type() = type->second;
    in->set_optional(true);  // an unset optional input of the graph stays unset there
    inputs_[src] = name;
    f_.inputs.emplace_back(name, src);
    return "@" + name;
  }

  // Graph output number k: `there` (a source in the fragment) sets `here`.
  absl::Status Output(const std::string& there, const std::string& here) {
    auto type = plan_.types.find(here);
    if (type == plan_.types.end())
      return absl::InvalidArgumentError(absl::StrCat("'", here, "' has no type"));
    v1::GraphOutput* o = f_.config.add_output();
    o->set_name(absl::StrCat("out", f_.outputs.size()));
    o->set_source(there);
    f_.outputs.emplace_back(o->name(), here);
    f_.output_types[o->name()] = type->second;
    return absl::OkStatus();
  }

  const PlannedLoop& pl_;
  const GraphPlan& plan_;
  std::set<std::string> body_;                 // the body's node names here
  std::map<std::string, std::string> inputs_;  // outer source -> graph input there
  LoopFragment f_;
};

}  // namespace

absl::StatusOr<LoopFragment> MakeLoopFragment(const PlannedLoop& pl, const GraphPlan& plan,
                                              const std::vector<std::string>& captured) {
  return FragmentWriter(pl, plan).Write(captured);
}

}  // namespace sd
