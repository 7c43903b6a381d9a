/* sd:img2img — Stable Diffusion image to image on the whole input; with `controlnet` set, the
 * picture on the aux pad (a depth pass, edges, ...) steers it through that ControlNet. */
#include "sd_gegl_common.h"

#ifdef GEGL_PROPERTIES

// clang-format off
SD_GEGL_COMMON_PROPERTIES
SD_GEGL_CONTROL_PROPERTIES
property_double(strength, "Strength", 0.8)
  description("How much to repaint: 0 keeps the input, 1 ignores it")
  value_range(0.01, 1.0)
// clang-format on

#else

#define GEGL_OP_COMPOSER
#define GEGL_OP_NAME sd_img2img
#define GEGL_OP_C_SOURCE sd-img2img.c
#define GEGL_OP_BUNDLE
#include "gegl-op.h"

SD_GEGL_DEFINE_FINALIZE

static void prepare(GeglOperation* operation) {
  gegl_operation_set_format(operation, "input", babl_format("R'G'B' u8"));
  gegl_operation_set_format(operation, "aux", babl_format("R'G'B' u8"));
  gegl_operation_set_format(operation, "output", babl_format("R'G'B'A float"));
}

static GeglRectangle required(GeglOperation* operation, const gchar* pad,
                              const GeglRectangle* roi) {
  return g_strcmp0(pad, "aux") == 0 ? sd_gegl_required_whole_pad(operation, pad, roi)
                                    : sd_gegl_required_whole_input(operation, pad, roi);
}

static gboolean process(GeglOperation* operation, GeglBuffer* input, GeglBuffer* aux,
                        GeglBuffer* output, const GeglRectangle* result, gint level) {
  (void)result;
  (void)level;
  GeglProperties* o = GEGL_PROPERTIES(operation);
  const GeglRectangle in = sd_gegl_whole_input(operation);
  if (in.width <= 0 || in.height <= 0) {
    g_warning("sd:img2img: the input is empty");
    return FALSE;
  }
  guchar* rgb = g_new(guchar, (gsize)in.width * in.height * 3);
  gegl_buffer_get(input, &in, 1.0, babl_format("R'G'B' u8"), rgb, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  SdGeglRequest r = {0};
  SD_GEGL_REQUEST(r, o, operation, "img2img");
  r.strength = o->strength;
  r.init_rgb = rgb;
  r.init_width = in.width;
  r.init_height = in.height;
  r.controlnet = o->controlnet;
  r.control_strength = o->control_strength;
  guchar* hint = sd_gegl_read_hint(operation, aux, &r);
  const gboolean ok = sd_gegl_render("sd:img2img", &r, output, in.x, in.y);
  g_free(rgb);
  g_free(hint);
  return ok;
}

static void gegl_op_class_init(GeglOpClass* klass) {
  GeglOperationClass* operation_class = GEGL_OPERATION_CLASS(klass);
  GeglOperationComposerClass* composer_class = GEGL_OPERATION_COMPOSER_CLASS(klass);
  SD_GEGL_HOOK_FINALIZE(klass);
  composer_class->process = process;
  operation_class->prepare = prepare;
  operation_class->get_bounding_box = sd_gegl_whole_input;
  operation_class->get_required_for_output = required;
  operation_class->get_cached_region = sd_gegl_cached_whole_input;
  operation_class->threaded = FALSE;
  gegl_operation_class_set_keys(operation_class, "name", "sd:img2img", "title", "Stable Diffusion: image to image",
                                "categories", "artistic", "description",
                                "Repaints the image from a text prompt with a Stable Diffusion v1.x checkpoint (sdgraph)",
                                NULL);
}

#endif
