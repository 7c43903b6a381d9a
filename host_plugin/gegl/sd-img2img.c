/* sd:img2img — a GEGL filter: Stable Diffusion image to image on the whole input. */
#include "sd_gegl_common.h"

#ifdef GEGL_PROPERTIES

SD_GEGL_COMMON_PROPERTIES
property_double(strength, "Strength", 0.8)
  description("How much to repaint: 0 keeps the input, 1 ignores it")
  value_range(0.01, 1.0)

#else

#define GEGL_OP_FILTER
#define GEGL_OP_NAME sd_img2img
#define GEGL_OP_C_SOURCE sd-img2img.c
#define GEGL_OP_BUNDLE
#include "gegl-op.h"

SD_GEGL_DEFINE_FINALIZE

static void prepare(GeglOperation* operation) {
  gegl_operation_set_format(operation, "input", babl_format("R'G'B' u8"));
  gegl_operation_set_format(operation, "output", babl_format("R'G'B'A float"));
}


static gboolean process(GeglOperation* operation, GeglBuffer* input, GeglBuffer* output, const GeglRectangle* result,
                        gint level) {
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
  const gboolean ok = sd_gegl_render("sd:img2img", &r, output, in.x, in.y);
  g_free(rgb);
  return ok;
}

static void gegl_op_class_init(GeglOpClass* klass) {
  GeglOperationClass* operation_class = GEGL_OPERATION_CLASS(klass);
  GeglOperationFilterClass* filter_class = GEGL_OPERATION_FILTER_CLASS(klass);
  SD_GEGL_HOOK_FINALIZE(klass);
  filter_class->process = process;
  operation_class->prepare = prepare;
  operation_class->get_required_for_output = sd_gegl_required_whole_input;
  operation_class->get_cached_region = sd_gegl_cached_whole_input;
  operation_class->threaded = FALSE;
  gegl_operation_class_set_keys(operation_class, "name", "sd:img2img", "title", "Stable Diffusion: image to image",
                                "categories", "artistic", "description",
                                "Repaints the image from a text prompt with a Stable Diffusion v1.x checkpoint (sdgraph)",
                                NULL);
}

#endif
