#include "nodes/weights/sd_config.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/weights/tensor_view.h"

namespace sd {
namespace {

class KeyList {
 public:
  explicit KeyList(std::vector<KeySpec>* out) : out_(out) {}
  void Add(const std::string& name, std::vector<int64_t> shape) { out_->push_back({name, std::move(shape)}); }
  void Norm(const std::string& p, int64_t c) {
    Add(p + ".weight", {c});
    Add(p + ".bias", {c});
  }
  void Conv(const std::string& p, int64_t out, int64_t in, int64_t k) {
    Add(p + ".weight", {out, in, k, k});
    Add(p + ".bias", {out});
  }
  void Linear(const std::string& p, int64_t out, int64_t in, bool bias = true) {
    Add(p + ".weight", {out, in});
    if (bias) Add(p + ".bias", {out});
  }

 private:
  std::vector<KeySpec>* out_;
};

void ClipKeys(const ClipTextConfig& c, KeyList& k) {
  const std::string p = kClipPrefix;
  k.Add(p + "embeddings.token_embedding.weight", {c.vocab_size, c.width});
  k.Add(p + "embeddings.position_embedding.weight", {c.max_positions, c.width});
  for (int l = 0; l < c.layers; ++l) {
    const std::string q = absl::StrCat(p, "encoder.layers.", l, ".");
    k.Norm(q + "layer_norm1", c.width);
    k.Norm(q + "layer_norm2", c.width);
    k.Linear(q + "mlp.fc1", c.ffn, c.width);
    k.Linear(q + "mlp.fc2", c.width, c.ffn);
    for (const char* proj : {"k_proj", "v_proj", "q_proj", "out_proj"}) {
      k.Linear(q + "self_attn." + proj, c.width, c.width);
    }
  }
  k.Norm(p + "final_layer_norm", c.width);
}

// LDM's VAE ResnetBlock.
void VaeResnet(const std::string& p, int64_t in, int64_t out, KeyList& k) {
  k.Norm(p + ".norm1", in);
  k.Conv(p + ".conv1", out, in, 3);
  k.Norm(p + ".norm2", out);
  k.Conv(p + ".conv2", out, out, 3);
  if (in != out) k.Conv(p + ".nin_shortcut", out, in, 1);
}

void VaeMid(const std::string& p, int64_t c, KeyList& k) {
  VaeResnet(p + ".block_1", c, c, k);
  k.Norm(p + ".attn_1.norm", c);
  for (const char* n : {".attn_1.q", ".attn_1.k", ".attn_1.v", ".attn_1.proj_out"}) k.Conv(p + n, c, c, 1);
  VaeResnet(p + ".block_2", c, c, k);
}

void VaeKeys(const VaeConfig& c, KeyList& k) {
  const std::string p = kVaePrefix;
  const int levels = static_cast<int>(c.ch_mult.size());
  // Encoder.
  k.Conv(p + "encoder.conv_in", c.ch, c.in_channels, 3);
  int64_t block_in = c.ch;
  for (int i = 0; i < levels; ++i) {
    const int64_t block_out = c.ch * c.ch_mult[i];
    for (int j = 0; j < c.num_res_blocks; ++j) {
      VaeResnet(absl::StrCat(p, "encoder.down.", i, ".block.", j), block_in, block_out, k);
      block_in = block_out;
    }
    if (i != levels - 1) k.Conv(absl::StrCat(p, "encoder.down.", i, ".downsample.conv"), block_in, block_in, 3);
  }
  VaeMid(p + "encoder.mid", block_in, k);
  k.Norm(p + "encoder.norm_out", block_in);
  k.Conv(p + "encoder.conv_out", 2 * c.z_channels, block_in, 3);
  k.Conv(p + "quant_conv", 2 * c.embed_dim, 2 * c.z_channels, 1);
  k.Conv(p + "post_quant_conv", c.z_channels, c.embed_dim, 1);
  // Decoder.
  block_in = c.ch * c.ch_mult.back();
  k.Conv(p + "decoder.conv_in", block_in, c.z_channels, 3);
  VaeMid(p + "decoder.mid", block_in, k);
  for (int i = levels - 1; i >= 0; --i) {
    const int64_t block_out = c.ch * c.ch_mult[i];
    for (int j = 0; j <= c.num_res_blocks; ++j) {
      VaeResnet(absl::StrCat(p, "decoder.up.", i, ".block.", j), block_in, block_out, k);
      block_in = block_out;
    }
    if (i != 0) k.Conv(absl::StrCat(p, "decoder.up.", i, ".upsample.conv"), block_in, block_in, 3);
  }
  k.Norm(p + "decoder.norm_out", block_in);
  k.Conv(p + "decoder.conv_out", c.out_channels, block_in, 3);
}

// LDM's openaimodel ResBlock.
void UNetResBlock(const std::string& p, int64_t in, int64_t out, int64_t emb, KeyList& k) {
  k.Norm(p + ".in_layers.0", in);
  k.Conv(p + ".in_layers.2", out, in, 3);
  k.Linear(p + ".emb_layers.1", out, emb);
  k.Norm(p + ".out_layers.0", out);
  k.Conv(p + ".out_layers.3", out, out, 3);
  if (in != out) k.Conv(p + ".skip_connection", out, in, 1);
}

void UNetTransformer(const std::string& p, int64_t c, const UNetConfig& u, KeyList& k) {
  k.Norm(p + ".norm", c);
  k.Conv(p + ".proj_in", c, c, 1);
  for (int d = 0; d < u.transformer_depth; ++d) {
    const std::string b = absl::StrCat(p, ".transformer_blocks.", d);
    for (const char* attn : {".attn1", ".attn2"}) {
      const int64_t kv_in = std::string(attn) == ".attn1" ? c : u.context_dim;
      k.Linear(b + attn + ".to_q", c, c, false);
      k.Linear(b + attn + ".to_k", c, kv_in, false);
      k.Linear(b + attn + ".to_v", c, kv_in, false);
      k.Linear(b + attn + ".to_out.0", c, c);
    }
    k.Linear(b + ".ff.net.0.proj", 8 * c, c);  // GEGLU: value and gate, 4c each
    k.Linear(b + ".ff.net.2", c, 4 * c);
    k.Norm(b + ".norm1", c);
    k.Norm(b + ".norm2", c);
    k.Norm(b + ".norm3", c);
  }
  k.Conv(p + ".proj_out", c, c, 1);
}

// Time embedding, input blocks and middle block (what a ControlNet copies) under prefix `p`;
// returns the channels of the skip connections, in input-block order.
std::vector<int64_t> UNetTrunkKeys(const UNetConfig& u, const std::string& p, KeyList& k) {
  const int64_t mc = u.model_channels, emb = 4 * mc;
  const int levels = static_cast<int>(u.channel_mult.size());
  k.Linear(p + "time_embed.0", emb, mc);
  k.Linear(p + "time_embed.2", emb, emb);
  k.Conv(p + "input_blocks.0.0", mc, u.in_channels, 3);
  std::vector<int64_t> skip_chans = {mc};
  int64_t ch = mc;
  int block = 1;
  for (int level = 0; level < levels; ++level) {
    for (int r = 0; r < u.num_res_blocks; ++r, ++block) {
      const int64_t out = mc * u.channel_mult[level];
      const std::string b = absl::StrCat(p, "input_blocks.", block);
      UNetResBlock(b + ".0", ch, out, emb, k);
      ch = out;
      if (u.attention[level]) UNetTransformer(b + ".1", ch, u, k);
      skip_chans.push_back(ch);
    }
    if (level != levels - 1) {
      k.Conv(absl::StrCat(p, "input_blocks.", block, ".0.op"), ch, ch, 3);
      skip_chans.push_back(ch);
      ++block;
    }
  }
  UNetResBlock(p + "middle_block.0", ch, ch, emb, k);
  UNetTransformer(p + "middle_block.1", ch, u, k);
  UNetResBlock(p + "middle_block.2", ch, ch, emb, k);
  return skip_chans;
}

void UNetKeys(const UNetConfig& u, KeyList& k) {
  const std::string p = kUNetPrefix;
  const int64_t mc = u.model_channels, emb = 4 * mc;
  const int levels = static_cast<int>(u.channel_mult.size());
  std::vector<int64_t> skip_chans = UNetTrunkKeys(u, p, k);
  int64_t ch = mc * u.channel_mult.back();
  int block = 0;
  for (int level = levels - 1; level >= 0; --level) {
    for (int r = 0; r <= u.num_res_blocks; ++r, ++block) {
      const int64_t skip = skip_chans.back();
      skip_chans.pop_back();
      const int64_t out = mc * u.channel_mult[level];
      const std::string b = absl::StrCat(p, "output_blocks.", block);
      UNetResBlock(b + ".0", ch + skip, out, emb, k);
      ch = out;
      int sub = 1;
      if (u.attention[level]) UNetTransformer(absl::StrCat(b, ".", sub++), ch, u, k);
      if (level != 0 && r == u.num_res_blocks) k.Conv(absl::StrCat(b, ".", sub, ".conv"), ch, ch, 3);
    }
  }
  k.Norm(p + "out.0", mc);
  k.Conv(p + "out.2", u.out_channels, mc, 3);
}

absl::Status Missing(const std::string& key) {
  return absl::NotFoundError(absl::StrCat("cannot detect the model configuration: key '", key, "' is missing"));
}

absl::Status BadShape(const std::string& key, const std::vector<int64_t>& s, size_t rank) {
  return absl::InvalidArgumentError(absl::StrCat("cannot detect the model configuration: '", key,
                                                 "' has shape ", ShapeString(s), ", expected rank ", rank));
}

// Shape of `key`, required to have `rank` dimensions.
absl::StatusOr<std::vector<int64_t>> Need(const ShapeLookup& shape_of, const std::string& key, size_t rank) {
  const std::vector<int64_t>* s = shape_of(key);
  if (!s) return Missing(key);
  if (s->size() != rank) return BadShape(key, *s, rank);
  return *s;
}

#define SD_CFG_ASSIGN(lhs, expr)           \
  auto lhs##_or = (expr);                  \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  const auto& lhs = *lhs##_or

absl::StatusOr<ClipTextConfig> DetectClip(const ShapeLookup& shape_of) {
  const std::string p = kClipPrefix;
  ClipTextConfig c;
  SD_CFG_ASSIGN(tok, Need(shape_of, p + "embeddings.token_embedding.weight", 2));
  SD_CFG_ASSIGN(pos, Need(shape_of, p + "embeddings.position_embedding.weight", 2));
  c.vocab_size = static_cast<int>(tok[0]);
  c.width = static_cast<int>(tok[1]);
  c.max_positions = static_cast<int>(pos[0]);
  c.layers = 0;
  while (shape_of(absl::StrCat(p, "encoder.layers.", c.layers, ".layer_norm1.weight"))) ++c.layers;
  if (c.layers == 0) return Missing(p + "encoder.layers.0.layer_norm1.weight");
  SD_CFG_ASSIGN(fc1, Need(shape_of, p + "encoder.layers.0.mlp.fc1.weight", 2));
  c.ffn = static_cast<int>(fc1[0]);
  c.heads = std::max(1, c.width / 64);
  return c;
}

absl::StatusOr<VaeConfig> DetectVae(const ShapeLookup& shape_of) {
  const std::string p = kVaePrefix;
  VaeConfig c;
  SD_CFG_ASSIGN(conv_in, Need(shape_of, p + "encoder.conv_in.weight", 4));
  c.ch = static_cast<int>(conv_in[0]);
  c.in_channels = static_cast<int>(conv_in[1]);
  c.ch_mult.clear();
  for (int i = 0;; ++i) {
    const std::vector<int64_t>* s = shape_of(absl::StrCat(p, "encoder.down.", i, ".block.0.conv2.weight"));
    if (!s) break;
    if (s->size() != 4 || (*s)[0] % c.ch != 0) return BadShape(absl::StrCat(p, "encoder.down.", i, ".block.0.conv2.weight"), *s, 4);
    c.ch_mult.push_back(static_cast<int>((*s)[0] / c.ch));
  }
  if (c.ch_mult.empty()) return Missing(p + "encoder.down.0.block.0.conv2.weight");
  c.num_res_blocks = 0;
  while (shape_of(absl::StrCat(p, "encoder.down.0.block.", c.num_res_blocks, ".conv1.weight"))) ++c.num_res_blocks;
  SD_CFG_ASSIGN(conv_out, Need(shape_of, p + "encoder.conv_out.weight", 4));
  c.z_channels = static_cast<int>(conv_out[0] / 2);
  SD_CFG_ASSIGN(quant, Need(shape_of, p + "quant_conv.weight", 4));
  c.embed_dim = static_cast<int>(quant[0] / 2);
  SD_CFG_ASSIGN(dec_out, Need(shape_of, p + "decoder.conv_out.weight", 4));
  c.out_channels = static_cast<int>(dec_out[0]);
  return c;
}

absl::StatusOr<UNetConfig> DetectUNet(const ShapeLookup& shape_of) {
  SD_CFG_ASSIGN(trunk, DetectUNetTrunk(shape_of, kUNetPrefix));
  UNetConfig u = trunk;
  SD_CFG_ASSIGN(out, Need(shape_of, std::string(kUNetPrefix) + "out.2.weight", 4));
  u.out_channels = static_cast<int>(out[0]);
  return u;
}

}  // namespace

absl::StatusOr<UNetConfig> DetectUNetTrunk(const ShapeLookup& shape_of, const std::string& p) {
  UNetConfig u;
  SD_CFG_ASSIGN(conv_in, Need(shape_of, p + "input_blocks.0.0.weight", 4));
  u.model_channels = static_cast<int>(conv_in[0]);
  u.in_channels = static_cast<int>(conv_in[1]);
  // SDXL has a label embedding; SD 2.x (and SDXL) project into transformers with linear layers.
  const std::vector<int64_t>* proj_in = shape_of(p + "input_blocks.1.1.proj_in.weight");
  if (shape_of(p + "label_emb.0.0.weight") || (proj_in && proj_in->size() == 2)) {
    return absl::UnimplementedError("this looks like an SD 2.x or SDXL checkpoint; only SD v1.x is supported");
  }
  // Walk the input blocks: ResBlocks (in_layers) until a Downsample (op) closes each level.
  u.channel_mult.clear();
  u.attention.clear();
  int res_in_level = 0;
  bool attn_in_level = false;
  int num_res = -1;
  for (int b = 1;; ++b) {
    const std::string bp = absl::StrCat(p, "input_blocks.", b);
    const std::vector<int64_t>* res = shape_of(bp + ".0.in_layers.2.weight");
    const bool down = shape_of(bp + ".0.op.weight") != nullptr;
    if (res) {
      if (res_in_level == 0) {
        if ((*res)[0] % u.model_channels != 0) return BadShape(bp + ".0.in_layers.2.weight", *res, 4);
        u.channel_mult.push_back(static_cast<int>((*res)[0] / u.model_channels));
      }
      ++res_in_level;
      attn_in_level = attn_in_level || shape_of(bp + ".1.proj_in.weight") != nullptr;
    }
    if (down || !res) {
      if (res_in_level == 0) break;
      if (num_res >= 0 && num_res != res_in_level) {
        return absl::InvalidArgumentError("cannot detect the model configuration: levels have different ResBlock counts");
      }
      num_res = res_in_level;
      u.attention.push_back(attn_in_level);
      res_in_level = 0;
      attn_in_level = false;
      if (!down) break;
    }
  }
  if (u.channel_mult.empty()) return Missing(p + "input_blocks.1.0.in_layers.2.weight");
  u.num_res_blocks = num_res;
  // Transformer geometry from the middle block, present in every SD v1.x UNet.
  const std::string t = p + "middle_block.1.transformer_blocks.";
  u.transformer_depth = 0;
  while (shape_of(absl::StrCat(t, u.transformer_depth, ".norm1.weight"))) ++u.transformer_depth;
  if (u.transformer_depth == 0) return Missing(t + "0.norm1.weight");
  SD_CFG_ASSIGN(to_k, Need(shape_of, t + "0.attn2.to_k.weight", 2));
  u.context_dim = static_cast<int>(to_k[1]);
  if (u.context_dim == 1024) {
    return absl::UnimplementedError("this looks like an SD 2.x checkpoint (context width 1024); only SD v1.x is supported");
  }
  u.num_heads = 8;
  return u;
}

std::vector<int64_t> UNetSkipChannels(const UNetConfig& unet) {
  std::vector<KeySpec> scratch;
  KeyList k(&scratch);
  return UNetTrunkKeys(unet, "", k);
}

std::vector<KeySpec> UNetTrunkKeys(const UNetConfig& unet, const std::string& prefix) {
  std::vector<KeySpec> keys;
  KeyList k(&keys);
  UNetTrunkKeys(unet, prefix, k);
  return keys;
}

SdConfig SdConfig::Sd15() { return SdConfig(); }

SdConfig SdConfig::Tiny() {
  SdConfig c;
  c.clip.width = 64;
  c.clip.layers = 2;
  c.clip.heads = 1;
  c.clip.ffn = 256;
  c.vae.ch = 32;
  c.vae.num_res_blocks = 1;
  c.unet.model_channels = 32;
  c.unet.num_res_blocks = 1;
  // No attention at full latent resolution: there attention costs the same for any width (it grows with the
  // square of the pixel count), and the tiny model is for fast tests of everything else.
  c.unet.attention = {false, true, true, false};
  c.unet.context_dim = 64;
  return c;
}

SdConfig SdConfig::DemoShapes() {
  SdConfig c;
  c.clip.width = 96;  // its token embedding (49408 x width) is a third of the file
  c.clip.layers = 3;
  c.clip.heads = 1;
  c.clip.ffn = 384;
  c.vae.ch = 32;
  c.vae.ch_mult = {1, 2, 2, 2};
  c.vae.num_res_blocks = 1;
  c.unet.model_channels = 64;
  c.unet.channel_mult = {1, 2, 2};
  c.unet.num_res_blocks = 1;
  c.unet.attention = {true, true, true};
  c.unet.context_dim = 96;
  return c;
}

std::string ConfigName(const SdConfig& c) {
  SdConfig plain = c;
  plain.unet.in_channels = 4;
  std::string name;
  if (plain == SdConfig::Sd15()) name = "sd15";
  if (plain == SdConfig::Tiny()) name = "tiny";
  if (plain == SdConfig::DemoShapes()) name = "demo-shapes";
  if (name.empty()) return "custom";
  return c.unet.in_channels == 9 ? name + "-inpainting" : name;
}

bool SdConfig::operator==(const SdConfig& o) const {
  auto clip_eq = [](const ClipTextConfig& a, const ClipTextConfig& b) {
    return a.vocab_size == b.vocab_size && a.max_positions == b.max_positions && a.width == b.width &&
           a.layers == b.layers && a.heads == b.heads && a.ffn == b.ffn;
  };
  auto vae_eq = [](const VaeConfig& a, const VaeConfig& b) {
    return a.in_channels == b.in_channels && a.out_channels == b.out_channels && a.ch == b.ch &&
           a.ch_mult == b.ch_mult && a.num_res_blocks == b.num_res_blocks &&
           a.z_channels == b.z_channels && a.embed_dim == b.embed_dim;
  };
  auto unet_eq = [](const UNetConfig& a, const UNetConfig& b) {
    return a.in_channels == b.in_channels && a.out_channels == b.out_channels &&
           a.model_channels == b.model_channels && a.channel_mult == b.channel_mult &&
           a.num_res_blocks == b.num_res_blocks && a.attention == b.attention &&
           a.num_heads == b.num_heads && a.transformer_depth == b.transformer_depth &&
           a.context_dim == b.context_dim;
  };
  return clip_eq(clip, o.clip) && vae_eq(vae, o.vae) && unet_eq(unet, o.unet);
}

std::string SdConfig::Describe() const {
  std::vector<int> attn;
  for (bool a : unet.attention) attn.push_back(a ? 1 : 0);
  return absl::StrCat(
      "unet: in_channels=", unet.in_channels, unet.in_channels == 9 ? " (inpainting)" : "",
      " out_channels=", unet.out_channels, " model_channels=", unet.model_channels,
      " channel_mult=[", absl::StrJoin(unet.channel_mult, ","), "] num_res_blocks=", unet.num_res_blocks,
      " attention=[", absl::StrJoin(attn, ","), "] heads=", unet.num_heads,
      " transformer_depth=", unet.transformer_depth, " context_dim=", unet.context_dim, "\n",
      "vae: ch=", vae.ch, " ch_mult=[", absl::StrJoin(vae.ch_mult, ","), "] num_res_blocks=",
      vae.num_res_blocks, " z_channels=", vae.z_channels, " embed_dim=", vae.embed_dim, "\n",
      "clip: vocab=", clip.vocab_size, " positions=", clip.max_positions, " width=", clip.width,
      " layers=", clip.layers, " heads=", clip.heads, " ffn=", clip.ffn);
}

std::vector<KeySpec> ExpectedKeys(const SdConfig& config) {
  std::vector<KeySpec> keys;
  KeyList k(&keys);
  UNetKeys(config.unet, k);
  VaeKeys(config.vae, k);
  ClipKeys(config.clip, k);
  return keys;
}

absl::StatusOr<SdConfig> DetectConfig(const ShapeLookup& shape_of) {
  SdConfig c;
  SD_CFG_ASSIGN(unet, DetectUNet(shape_of));
  SD_CFG_ASSIGN(vae, DetectVae(shape_of));
  SD_CFG_ASSIGN(clip, DetectClip(shape_of));
  c.unet = unet;
  c.vae = vae;
  c.clip = clip;
  if (c.unet.context_dim != c.clip.width) {
    return absl::InvalidArgumentError(absl::StrCat("UNet cross-attention expects a context of width ",
                                                   c.unet.context_dim, " but the text encoder is ",
                                                   c.clip.width, " wide"));
  }
  return c;
}

KeyCheck CheckKeys(const SdConfig& config, const ShapeLookup& shape_of) {
  KeyCheck check;
  for (const KeySpec& key : ExpectedKeys(config)) {
    const std::vector<int64_t>* s = shape_of(key.name);
    if (!s) {
      check.missing.push_back(key.name);
    } else if (*s != key.shape) {
      check.mismatched.push_back({key.name, key.shape, *s});
    } else {
      ++check.matched;
    }
  }
  return check;
}

absl::Status KeyCheck::ToStatus(const std::string& path, size_t max_listed) const {
  if (ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(path, ": ", missing.size(), " missing key(s), ", mismatched.size(),
                                 " shape mismatch(es)");
  for (size_t i = 0; i < missing.size() && i < max_listed; ++i) absl::StrAppend(&msg, "\n  missing: ", missing[i]);
  for (size_t i = 0; i < mismatched.size() && i < max_listed; ++i) {
    absl::StrAppend(&msg, "\n  shape of ", mismatched[i].name, ": expected ",
                    ShapeString(mismatched[i].expected), ", found ", ShapeString(mismatched[i].found));
  }
  if (missing.size() > max_listed || mismatched.size() > max_listed) absl::StrAppend(&msg, "\n  ...");
  return absl::FailedPreconditionError(msg);
}

}  // namespace sd
