#include "host_plugin/runtime/subgraphs.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/node_contract.h"

namespace sd {

std::string Where(const SourceLoc& loc) {
  return loc.line > 0 ? absl::StrCat(loc.file, ":", loc.line) : loc.file;
}

absl::Status GraphError(const SourceLoc& loc, const std::string& where, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat("graph ", Where(loc), ": ",
                                                 where.empty() ? "" : where + ": ", msg,
                                                 loc.via.empty() ? "" : " (" + loc.via + ")"));
}

namespace {

using google::protobuf::Descriptor;
using google::protobuf::RepeatedPtrField;
using google::protobuf::TextFormat;
using Tree = TextFormat::ParseInfoTree;

class Collector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error.empty()) error = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  std::string error;
};

struct ParsedFile {
  std::string path;
  v1::GraphConfig config;
  Tree tree;
};

// The 1-based line of element `index` of repeated `field` in a parse tree (0: unknown).
int LineIn(const Tree* t, const Descriptor* d, const char* field, int index) {
  if (!t) return 0;
  const auto loc = t->GetLocation(d->FindFieldByName(field), index);
  return loc.line >= 0 ? loc.line + 1 : 0;
}

const Tree* NestedIn(const Tree* t, const Descriptor* d, const char* field, int index) {
  return t ? t->GetTreeForNested(d->FindFieldByName(field), index) : nullptr;
}

bool BadName(const std::string& name) {
  return name.empty() || name.find_first_of(".=@# /") != std::string::npos;
}

// A graph or a subgraph: their fields have the same names.
struct Body {
  const RepeatedPtrField<v1::Node>& nodes;
  const RepeatedPtrField<v1::Loop>& loops;
  const Descriptor* desc;
  const Tree* tree;
  std::string file;
};

// What names mean where a body is being flattened.
struct Scope {
  std::string prefix;                 // "" at the top, "USER/" inside a subgraph
  const v1::Subgraph* sub = nullptr;  // null at the top
  std::map<std::string, std::optional<std::string>>
      bindings;                    // input -> flat source (unwired: none)
  std::set<std::string> locals;    // the subgraph's own node and loop names
  std::vector<std::string> chain;  // the subgraphs being flattened, outermost first
  std::string via;
  // The placement of loops inside that do not say (the innermost subgraph's that says).
  v1::Placement placement = v1::PLACEMENT_UNSPECIFIED;
};

class Expander {
 public:
  Expander(const ContractLookup& contracts, const GraphImports& imports)
      : contracts_(contracts), imports_(imports) {}

  absl::StatusOr<ExpandedGraph> Run(const std::string& text, const std::string& file);

 private:
  struct Def {
    const v1::Subgraph* sub;
    const ParsedFile* file;
    int index;
  };
  absl::StatusOr<ParsedFile*> Parse(const std::string& text, const std::string& path);
  absl::Status Import(const ParsedFile& from, std::vector<std::string>& stack);
  absl::StatusOr<std::string> Find(const ParsedFile& from, const std::string& spec,
                                   const SourceLoc& loc, std::string* text) const;
  absl::Status Define(const ParsedFile& f);
  absl::Status EmitBody(const Body& b, const Scope& s, int into);
  absl::Status EmitLoop(const v1::Loop& l, const SourceLoc& loc, const Tree* tree, const Scope& s);
  absl::Status EmitNode(const v1::Node& n, const SourceLoc& loc, const Scope& s, bool in_own_loop,
                        int into);
  absl::Status Inline(const v1::Node& n, const SourceLoc& loc, const Scope& outer, bool in_own_loop,
                      int into);
  absl::StatusOr<Scope> BindInputs(const v1::Node& n, const SourceLoc& loc, const Scope& outer,
                                   bool in_own_loop, const Def& d);
  absl::StatusOr<std::optional<std::string>> Rename(const std::string& src, const Scope& s,
                                                    bool in_own_loop, const SourceLoc& loc,
                                                    const std::string& where) const;
  absl::Status Resolve(std::string& src, const SourceLoc& loc, const std::string& where) const;
  absl::Status ResolveAliases();

  absl::StatusOr<std::string> Literal(const std::string& text, const v1::PortType& type,
                                      const std::string& name, const SourceLoc& loc,
                                      const std::string& where);

  const ContractLookup& contracts_;
  const GraphImports& imports_;
  std::vector<std::unique_ptr<ParsedFile>> files_;
  std::set<std::string> loaded_;
  std::map<std::string, Def> defs_;
  std::map<std::string, std::string> users_;  // flat name of a node using a subgraph -> subgraph
  ExpandedGraph out_;
  int emitted_ = 0;
};

absl::StatusOr<ParsedFile*> Expander::Parse(const std::string& text, const std::string& path) {
  TextFormat::Parser parser;
  Collector errors;
  parser.RecordErrorsTo(&errors);
  auto f = std::make_unique<ParsedFile>();
  f->path = path;
  parser.WriteLocationsTo(&f->tree);
  if (!parser.ParseFromString(text, &f->config))
    return absl::InvalidArgumentError(absl::StrCat("graph ", path, ":", errors.error));
  files_.push_back(std::move(f));
  return files_.back().get();
}

absl::StatusOr<std::string> Expander::Find(const ParsedFile& from, const std::string& spec,
                                           const SourceLoc& loc, std::string* text) const {
  const std::string where = absl::StrCat("import '", spec, "'");
  if (!imports_.read) return GraphError(loc, where, "files can't be imported here");
  namespace fs = std::filesystem;
  std::vector<std::string> candidates;
  if (fs::path(spec).is_absolute()) {
    candidates.push_back(spec);
  } else {
    candidates.push_back((fs::path(from.path).parent_path() / spec).string());
    for (const std::string& lib : imports_.library)
      candidates.push_back((fs::path(lib) / spec).string());
  }
  for (const std::string& c : candidates) {
    absl::StatusOr<std::string> read = imports_.read(c);
    if (read.ok()) {
      *text = *std::move(read);
      return fs::path(c).lexically_normal().string();
    }
    if (!absl::IsNotFound(read.status()))
      return GraphError(loc, where, std::string(read.status().message()));
  }
  return absl::NotFoundError(absl::StrCat("graph ", Where(loc), ": ", where,
                                          ": no such file (looked for ",
                                          absl::StrJoin(candidates, ", "), ")"));
}

absl::Status Expander::Import(const ParsedFile& from, std::vector<std::string>& stack) {
  for (int i = 0; i < from.config.import_size(); ++i) {
    const std::string& spec = from.config.import(i);
    const SourceLoc loc{from.path, LineIn(&from.tree, v1::GraphConfig::descriptor(), "import", i)};
    std::string text;
    SD_ASSIGN_OR_RETURN(const std::string key, Find(from, spec, loc, &text));
    if (std::find(stack.begin(), stack.end(), key) != stack.end()) {
      return GraphError(loc, absl::StrCat("import '", spec, "'"),
                        absl::StrCat("import cycle: ", absl::StrJoin(stack, " -> "), " -> ", key));
    }
    if (!loaded_.insert(key).second) continue;
    if (files_.size() >= static_cast<size_t>(kMaxImportedFiles))
      return GraphError(loc, "", absl::StrCat("more than ", kMaxImportedFiles, " files imported"));
    SD_ASSIGN_OR_RETURN(ParsedFile * f, Parse(text, key));
    const v1::GraphConfig& c = f->config;
    if (c.input_size() || c.node_size() || c.loop_size() || c.output_size()) {
      return GraphError(loc, absl::StrCat("import '", spec, "'"),
                        absl::StrCat(key,
                                     " has inputs, nodes, loops or outputs: an imported file "
                                     "holds only imports and subgraphs"));
    }
    stack.push_back(key);
    SD_RETURN_IF_ERROR(Import(*f, stack));
    stack.pop_back();
    SD_RETURN_IF_ERROR(Define(*f));
  }
  return absl::OkStatus();
}

absl::Status Expander::Define(const ParsedFile& f) {
  for (int i = 0; i < f.config.subgraph_size(); ++i) {
    const v1::Subgraph& sub = f.config.subgraph(i);
    const SourceLoc loc{f.path, LineIn(&f.tree, v1::GraphConfig::descriptor(), "subgraph", i)};
    const std::string where = absl::StrCat("subgraph '", sub.name(), "'");
    if (BadName(sub.name()))
      return GraphError(loc, where,
                        "a subgraph needs a name without '.', '=', '@', '#', '/' or spaces");
    if (contracts_(sub.name()).ok())
      return GraphError(loc, where, "a node kind has this name; choose another");
    if (auto it = defs_.find(sub.name()); it != defs_.end()) {
      const Def& d = it->second;
      return GraphError(
          loc, where,
          absl::StrCat("is defined twice (also at ", d.file->path, ":",
                       LineIn(&d.file->tree, v1::GraphConfig::descriptor(), "subgraph", d.index),
                       ")"));
    }
    if (sub.output_size() == 0) return GraphError(loc, where, "has no outputs");
    for (const v1::GraphInput& in : sub.input()) {
      if (BadName(in.name()) || in.type().kind() == v1::VALUE_KIND_UNSPECIFIED)
        return GraphError(loc, absl::StrCat(where, " input '", in.name(), "'"),
                          "needs a name (without '.', '=', '@', '#', '/' or spaces) and a type");
    }
    defs_[sub.name()] = {&sub, &f, i};
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> Expander::Rename(const std::string& src, const Scope& s,
                                                            bool in_own_loop, const SourceLoc& loc,
                                                            const std::string& where) const {
  if (!s.sub || src.empty()) return std::optional<std::string>(src);
  const std::string what = absl::StrCat("subgraph '", s.sub->name(), "'");
  if (src.rfind("@loop.", 0) == 0) {
    if (in_own_loop) return std::optional<std::string>(src);
    return GraphError(loc, where,
                      absl::StrCat("'", src, "' is visible only in a loop of ", what,
                                   "'s own; pass the value in as an input"));
  }
  if (src[0] == '@') {
    auto it = s.bindings.find(src.substr(1));
    if (it != s.bindings.end()) return it->second;
    std::vector<std::string> names;
    for (const v1::GraphInput& in : s.sub->input()) names.push_back(in.name());
    return GraphError(loc, where,
                      absl::StrCat(what, " has no input '", src.substr(1),
                                   "' (inputs: ", absl::StrJoin(names, ", "), ")"));
  }
  if (s.locals.count(src.substr(0, src.find('.'))))
    return std::optional<std::string>(s.prefix + src);
  return GraphError(loc, where,
                    absl::StrCat("'", src, "' is not in ", what,
                                 ": a subgraph reads its inputs (@NAME) and its own nodes only"));
}

absl::Status Expander::EmitNode(const v1::Node& n, const SourceLoc& loc, const Scope& s,
                                bool in_own_loop, int into) {
  if (defs_.count(n.kind())) return Inline(n, loc, s, in_own_loop, into);
  if (++emitted_ > kMaxExpandedNodes)
    return GraphError(loc, "", absl::StrCat("more than ", kMaxExpandedNodes, " nodes"));
  v1::Node flat = n;
  flat.set_name(s.prefix + n.name());
  flat.clear_input();
  for (const std::string& in : n.input()) {
    const size_t eq = in.find('=');
    const std::string port = in.substr(0, eq);
    if (eq != std::string::npos && in.compare(eq + 1, 1, "#") == 0) {
      absl::StatusOr<NodeContract> contract = contracts_(n.kind());
      const PortSpec* spec = contract.ok() ? contract->Input(port) : nullptr;
      if (spec) {  // else the planner names the unknown kind or port
        SD_ASSIGN_OR_RETURN(std::string src,
                            Literal(in.substr(eq + 2), spec->type, flat.name() + "/" + port, loc,
                                    absl::StrCat("node '", flat.name(), "' input '", port, "'")));
        flat.add_input(absl::StrCat(port, "=", src));
        continue;
      }
    }
    if (eq == std::string::npos || !s.sub) {  // the planner judges it
      flat.add_input(in);
      continue;
    }
    SD_ASSIGN_OR_RETURN(std::optional<std::string> src,
                        Rename(in.substr(eq + 1), s, in_own_loop, loc,
                               absl::StrCat("node '", flat.name(), "' input '", port, "'")));
    if (src) flat.add_input(absl::StrCat(port, "=", *src));
  }
  if (into < 0) {
    *out_.config->add_node() = std::move(flat);
    out_.nodes.push_back(loc);
  } else {
    *out_.config->mutable_loop(into)->add_node() = std::move(flat);
    out_.loop_nodes[into].push_back(loc);
  }
  return absl::OkStatus();
}

absl::StatusOr<Scope> Expander::BindInputs(const v1::Node& n, const SourceLoc& loc,
                                           const Scope& outer, bool in_own_loop, const Def& d) {
  const v1::Subgraph& sub = *d.sub;
  const std::string user = outer.prefix + n.name();
  const std::string where = absl::StrCat("node '", user, "'");
  Scope inner;
  inner.prefix = user + "/";
  inner.sub = &sub;
  inner.chain = outer.chain;
  inner.chain.push_back(sub.name());
  inner.placement =
      sub.placement() != v1::PLACEMENT_UNSPECIFIED ? sub.placement() : outer.placement;
  inner.via = absl::StrCat("in subgraph '", sub.name(), "' used by node '", user, "' at ",
                           Where(loc), loc.via.empty() ? "" : ", " + loc.via);
  std::map<std::string, const v1::GraphInput*> declared;
  for (const v1::GraphInput& in : sub.input()) declared[in.name()] = &in;
  for (const std::string& in : n.input()) {
    const size_t eq = in.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == in.size())
      return GraphError(loc, where, absl::StrCat("input '", in, "' is not PORT=SOURCE"));
    const std::string port = in.substr(0, eq);
    auto it = declared.find(port);
    if (it == declared.end()) {
      std::vector<std::string> names;
      for (const v1::GraphInput& i : sub.input()) names.push_back(i.name());
      return GraphError(loc, where,
                        absl::StrCat("subgraph '", sub.name(), "' has no input '", port,
                                     "' (inputs: ", absl::StrJoin(names, ", "), ")"));
    }
    if (inner.bindings.count(port))
      return GraphError(loc, where, absl::StrCat("input '", port, "' is wired twice"));
    const std::string at = absl::StrCat(where, " input '", port, "'");
    if (in[eq + 1] == '#') {
      SD_ASSIGN_OR_RETURN(inner.bindings[port], Literal(in.substr(eq + 2), it->second->type(),
                                                        user + "/" + port, loc, at));
      continue;
    }
    SD_ASSIGN_OR_RETURN(std::optional<std::string> src,
                        Rename(in.substr(eq + 1), outer, in_own_loop, loc, at));
    inner.bindings[port] = src;
    if (src) out_.declared.push_back({*src, it->second->type(), loc, at});
  }
  const Tree* tree = NestedIn(&d.file->tree, v1::GraphConfig::descriptor(), "subgraph", d.index);
  for (int i = 0; i < sub.input_size(); ++i) {
    const v1::GraphInput& in = sub.input(i);
    if (auto it = inner.bindings.find(in.name()); it != inner.bindings.end() && it->second)
      continue;
    if (in.has_default_value()) {  // a graph input of its own, so it can be set too
      v1::GraphInput* g = out_.config->add_input();
      *g = in;
      g->set_name(absl::StrCat(user, "/", in.name()));
      out_.inputs.push_back(
          {d.file->path, LineIn(tree, v1::Subgraph::descriptor(), "input", i), inner.via});
      inner.bindings[in.name()] = "@" + g->name();
    } else if (in.optional()) {
      inner.bindings[in.name()] = std::nullopt;
    } else {
      return GraphError(loc, where,
                        absl::StrCat("required input '", in.name(), "' (", DescribeType(in.type()),
                                     ") of subgraph '", sub.name(), "' is not wired"));
    }
  }
  for (const v1::Node& b : sub.node()) inner.locals.insert(b.name());
  for (const v1::Loop& l : sub.loop()) {
    inner.locals.insert(l.name());
    for (const v1::Node& b : l.node()) inner.locals.insert(b.name());
  }
  return inner;
}

// A literal input: a graph input of its own, with the literal as its default.
absl::StatusOr<std::string> Expander::Literal(const std::string& text, const v1::PortType& type,
                                              const std::string& name, const SourceLoc& loc,
                                              const std::string& where) {
  v1::GraphInput in;
  in.set_name(name);
  *in.mutable_type() = type;
  in.set_doc("a literal in the graph file");
  bool ok = true;
  switch (type.kind()) {
    case v1::INT: {
      int64_t i = 0;
      ok = absl::SimpleAtoi(text, &i);
      in.mutable_default_value()->set_i(i);
      break;
    }
    case v1::FLOAT: {
      double f = 0;
      ok = absl::SimpleAtod(text, &f) && std::isfinite(f);
      in.mutable_default_value()->set_f(f);
      break;
    }
    case v1::STRING:
      in.mutable_default_value()->set_s(text);
      break;
    default:
      return GraphError(loc, where, absl::StrCat("a literal can't be a ", DescribeType(type)));
  }
  if (!ok)
    return GraphError(loc, where,
                      absl::StrCat("'#", text, "' is not a valid ", DescribeType(type)));
  *out_.config->add_input() = std::move(in);
  out_.inputs.push_back(loc);
  return "@" + name;
}

absl::Status Expander::Inline(const v1::Node& n, const SourceLoc& loc, const Scope& outer,
                              bool in_own_loop, int into) {
  const Def& d = defs_.at(n.kind());
  const v1::Subgraph& sub = *d.sub;
  const std::string user = outer.prefix + n.name();
  const std::string where = absl::StrCat("node '", user, "'");
  if (BadName(n.name()))
    return GraphError(loc, where, "a node needs a name without '.', '=', '@', '#', '/' or spaces");
  if (std::find(outer.chain.begin(), outer.chain.end(), sub.name()) != outer.chain.end()) {
    return GraphError(loc, where,
                      absl::StrCat("subgraph '", sub.name(), "' uses itself: ",
                                   absl::StrJoin(outer.chain, " -> "), " -> ", sub.name()));
  }
  if (outer.chain.size() >= static_cast<size_t>(kMaxSubgraphDepth))
    return GraphError(loc, where, absl::StrCat("subgraphs nest deeper than ", kMaxSubgraphDepth));
  if (into >= 0 && sub.loop_size() > 0) {
    return GraphError(loc, where,
                      absl::StrCat("subgraph '", sub.name(), "' has a loop, and loop '",
                                   out_.config->loop(into).name(), "' can't hold another"));
  }
  if (n.has_options())
    return GraphError(loc, where, absl::StrCat("subgraph '", sub.name(), "' takes no options"));
  SD_ASSIGN_OR_RETURN(Scope inner, BindInputs(n, loc, outer, in_own_loop, d));
  users_[user] = sub.name();
  const Tree* tree = NestedIn(&d.file->tree, v1::GraphConfig::descriptor(), "subgraph", d.index);
  SD_RETURN_IF_ERROR(EmitBody(
      {sub.node(), sub.loop(), v1::Subgraph::descriptor(), tree, d.file->path}, inner, into));
  for (int i = 0; i < sub.output_size(); ++i) {
    const v1::GraphOutput& o = sub.output(i);
    const SourceLoc oloc{d.file->path, LineIn(tree, v1::Subgraph::descriptor(), "output", i),
                         inner.via};
    const std::string at = absl::StrCat("output '", o.name(), "'");
    SD_ASSIGN_OR_RETURN(std::optional<std::string> src, Rename(o.source(), inner, false, oloc, at));
    if (!src) return GraphError(oloc, at, "reads an input the using node leaves unwired");
    out_.aliases[absl::StrCat(user, ".", o.name())] = *src;
  }
  return absl::OkStatus();
}

absl::Status Expander::EmitLoop(const v1::Loop& l, const SourceLoc& loc, const Tree* tree,
                                const Scope& s) {
  v1::Loop* flat = out_.config->add_loop();
  const int index = out_.config->loop_size() - 1;
  flat->set_name(s.prefix + l.name());
  flat->set_placement(l.placement() != v1::PLACEMENT_UNSPECIFIED ? l.placement() : s.placement);
  out_.loops.push_back(loc);
  out_.loop_nodes.emplace_back();
  const std::string where = absl::StrCat("loop '", flat->name(), "'");
  auto rename = [&](const std::string& src, bool in_loop,
                    const std::string& what) -> absl::StatusOr<std::string> {
    SD_ASSIGN_OR_RETURN(std::optional<std::string> r,
                        Rename(src, s, in_loop, loc, absl::StrCat(where, " ", what)));
    if (!r) return GraphError(loc, where, absl::StrCat(what, " reads an unwired input"));
    return *r;
  };
  SD_ASSIGN_OR_RETURN(std::string timesteps, rename(l.timesteps(), false, "timesteps"));
  flat->set_timesteps(timesteps);
  for (const v1::Carry& c : l.carry()) {
    v1::Carry* fc = flat->add_carry();
    fc->set_name(c.name());
    const std::string what = absl::StrCat("carry '", c.name(), "'");
    SD_ASSIGN_OR_RETURN(std::string init, rename(c.init(), false, what + " init"));
    SD_ASSIGN_OR_RETURN(std::string next, rename(c.next(), true, what + " next"));
    fc->set_init(init);
    fc->set_next(next);
  }
  for (int j = 0; j < l.node_size(); ++j) {
    const int line = LineIn(tree, v1::Loop::descriptor(), "node", j);
    SD_RETURN_IF_ERROR(
        EmitNode(l.node(j), {loc.file, line > 0 ? line : loc.line, loc.via}, s, true, index));
  }
  return absl::OkStatus();
}

absl::Status Expander::EmitBody(const Body& b, const Scope& s, int into) {
  for (int j = 0; j < b.nodes.size(); ++j) {
    const SourceLoc loc{b.file, LineIn(b.tree, b.desc, "node", j), s.via};
    SD_RETURN_IF_ERROR(EmitNode(b.nodes.Get(j), loc, s, false, into));
  }
  for (int k = 0; k < b.loops.size(); ++k) {
    const SourceLoc loc{b.file, LineIn(b.tree, b.desc, "loop", k), s.via};
    SD_RETURN_IF_ERROR(EmitLoop(b.loops.Get(k), loc, NestedIn(b.tree, b.desc, "loop", k), s));
  }
  return absl::OkStatus();
}

// Follows aliases ("USER.OUTPUT" -> what the subgraph's output reads) to a flat source.
absl::Status Expander::Resolve(std::string& src, const SourceLoc& loc,
                               const std::string& where) const {
  for (size_t hops = 0; hops <= out_.aliases.size(); ++hops) {
    auto it = out_.aliases.find(src);
    if (it == out_.aliases.end()) break;
    src = it->second;
  }
  if (out_.aliases.count(src))
    return GraphError(loc, where, absl::StrCat("'", src, "' goes round in a circle"));
  const size_t dot = src.find('.');
  if (src.empty() || src[0] == '@' || dot == std::string::npos) return absl::OkStatus();
  auto user = users_.find(src.substr(0, dot));
  if (user == users_.end()) return absl::OkStatus();
  std::vector<std::string> names;
  for (const v1::GraphOutput& o : defs_.at(user->second).sub->output()) names.push_back(o.name());
  return GraphError(
      loc, where,
      absl::StrCat("node '", user->first, "' (subgraph '", user->second, "') has no output '",
                   src.substr(dot + 1), "' (outputs: ", absl::StrJoin(names, ", "), ")"));
}

absl::Status Expander::ResolveAliases() {
  auto inputs = [&](v1::Node& n, const SourceLoc& loc) -> absl::Status {
    for (std::string& in : *n.mutable_input()) {
      const size_t eq = in.find('=');
      if (eq == std::string::npos) continue;
      std::string src = in.substr(eq + 1);
      SD_RETURN_IF_ERROR(
          Resolve(src, loc, absl::StrCat("node '", n.name(), "' input '", in.substr(0, eq), "'")));
      in = absl::StrCat(in.substr(0, eq), "=", src);
    }
    return absl::OkStatus();
  };
  v1::GraphConfig& g = *out_.config;
  for (int i = 0; i < g.node_size(); ++i)
    SD_RETURN_IF_ERROR(inputs(*g.mutable_node(i), out_.nodes[i]));
  for (int i = 0; i < g.loop_size(); ++i) {
    v1::Loop& l = *g.mutable_loop(i);
    const std::string where = absl::StrCat("loop '", l.name(), "'");
    SD_RETURN_IF_ERROR(Resolve(*l.mutable_timesteps(), out_.loops[i], where));
    for (v1::Carry& c : *l.mutable_carry()) {
      SD_RETURN_IF_ERROR(Resolve(*c.mutable_init(), out_.loops[i], where));
      SD_RETURN_IF_ERROR(Resolve(*c.mutable_next(), out_.loops[i], where));
    }
    for (int j = 0; j < l.node_size(); ++j)
      SD_RETURN_IF_ERROR(inputs(*l.mutable_node(j), out_.loop_nodes[i][j]));
  }
  for (int i = 0; i < g.output_size(); ++i) {
    SD_RETURN_IF_ERROR(Resolve(*g.mutable_output(i)->mutable_source(), out_.outputs[i],
                               absl::StrCat("output '", g.output(i).name(), "'")));
  }
  for (DeclaredType& d : out_.declared) SD_RETURN_IF_ERROR(Resolve(d.source, d.loc, d.where));
  std::map<std::string, std::string> resolved = out_.aliases;
  for (auto& [name, src] : resolved) SD_RETURN_IF_ERROR(Resolve(src, {}, name));
  out_.aliases = std::move(resolved);
  return absl::OkStatus();
}

absl::StatusOr<ExpandedGraph> Expander::Run(const std::string& text, const std::string& file) {
  SD_ASSIGN_OR_RETURN(ParsedFile * main, Parse(text, file));
  std::vector<std::string> stack = {std::filesystem::path(file).lexically_normal().string()};
  loaded_.insert(stack[0]);
  SD_RETURN_IF_ERROR(Import(*main, stack));
  SD_RETURN_IF_ERROR(Define(*main));
  out_.config = std::make_shared<v1::GraphConfig>();
  out_.config->set_placement(main->config.placement());
  out_.config->set_cfg_batch(main->config.cfg_batch());
  const Tree* tree = &main->tree;
  const Descriptor* desc = v1::GraphConfig::descriptor();
  for (int i = 0; i < main->config.input_size(); ++i) {
    *out_.config->add_input() = main->config.input(i);
    out_.inputs.push_back({file, LineIn(tree, desc, "input", i)});
  }
  SD_RETURN_IF_ERROR(
      EmitBody({main->config.node(), main->config.loop(), desc, tree, file}, Scope(), -1));
  for (int i = 0; i < main->config.output_size(); ++i) {
    *out_.config->add_output() = main->config.output(i);
    out_.outputs.push_back({file, LineIn(tree, desc, "output", i)});
  }
  SD_RETURN_IF_ERROR(ResolveAliases());
  return std::move(out_);
}

}  // namespace

absl::StatusOr<ExpandedGraph> ExpandSubgraphs(const std::string& text, const std::string& file,
                                              const ContractLookup& contracts,
                                              const GraphImports& imports) {
  return Expander(contracts, imports).Run(text, file);
}

}  // namespace sd
