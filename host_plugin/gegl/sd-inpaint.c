/* sd:inpaint — a GEGL composer: repaints the white region of the mask on the aux pad. */
#include "sd_gegl_common.h"

#ifdef GEGL_PROPERTIES

SD_GEGL_COMMON_PROPERTIES
property_double(strength, "Strength", 1.0)
  description("How much to repaint inside the mask (ordinary checkpoints; 9-channel inpainting ones use 1)")
  value_range(0.01, 1.0)

#else

#define GEGL_OP_COMPOSER
#define GEGL_OP_NAME sd_inpaint
#define GEGL_OP_C_SOURCE sd-inpaint.c
#define GEGL_OP_BUNDLE
#include "gegl-op.h"

SD_GEGL_DEFINE_FINALIZE

static void prepare(GeglOperation* operation) {
  gegl_operation_set_format(operation, "input", babl_format("R'G'B' u8"));
  gegl_operation_set_format(operation, "aux", babl_format("Y' u8"));
  gegl_operation_set_format(operation, "output", babl_format("R'G'B'A float"));
}




static gboolean process(GeglOperation* operation, GeglBuffer* input, GeglBuffer* aux, GeglBuffer* output,
                        const GeglRectangle* result, gint level) {
  (void)result;
  (void)level;
  GeglProperties* o = GEGL_PROPERTIES(operation);
  const GeglRectangle in = sd_gegl_whole_input(operation);
  if (in.width <= 0 || in.height <= 0) {
    g_warning("sd:inpaint: the input is empty");
    return FALSE;
  }
  if (!aux) {
    g_warning("sd:inpaint: connect a mask to the aux pad (white = repaint)");
    return FALSE;
  }
  guchar* rgb = g_new(guchar, (gsize)in.width * in.height * 3);
  guchar* mask = g_new0(guchar, (gsize)in.width * in.height);
  gegl_buffer_get(input, &in, 1.0, babl_format("R'G'B' u8"), rgb, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  gegl_buffer_get(aux, &in, 1.0, babl_format("Y' u8"), mask, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  SdGeglRequest r = {0};
  SD_GEGL_REQUEST(r, o, operation, "inpaint");
  r.strength = o->strength;
  r.init_rgb = rgb;
  r.mask = mask;
  r.init_width = in.width;
  r.init_height = in.height;
  const gboolean ok = sd_gegl_render("sd:inpaint", &r, output, in.x, in.y);
  g_free(rgb);
  g_free(mask);
  return ok;
}

static void gegl_op_class_init(GeglOpClass* klass) {
  GeglOperationClass* operation_class = GEGL_OPERATION_CLASS(klass);
  GeglOperationComposerClass* composer_class = GEGL_OPERATION_COMPOSER_CLASS(klass);
  SD_GEGL_HOOK_FINALIZE(klass);
  composer_class->process = process;
  operation_class->prepare = prepare;
  operation_class->get_bounding_box = sd_gegl_whole_input;
  operation_class->get_required_for_output = sd_gegl_required_whole_input;
  operation_class->get_cached_region = sd_gegl_cached_whole_input;
  operation_class->threaded = FALSE;
  gegl_operation_class_set_keys(operation_class, "name", "sd:inpaint", "title", "Stable Diffusion: inpaint",
                                "categories", "artistic", "description",
                                "Repaints the white region of the aux mask from a text prompt (sdgraph)", NULL);
}

#endif
